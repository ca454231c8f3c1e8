"""Long work in napari's activity dock (the "activity" button at the bottom right of the window).

Each kind of work of an open canvas (loading its model, generating tiles, a mask, an export) gets one
:class:`napari.utils.progress` bar while it runs, closed when it ends. The controller drives them from the GUI
thread on its ``state_changed`` signal, so a bar never outlives its work and nothing here polls.
"""

from __future__ import annotations

__all__ = ["ActivityBar"]


class ActivityBar:
    """One bar in napari's activity dock, opened by the first :meth:`show` and closed by :meth:`end`.

    ``show(done, total, desc)``: ``total`` 0 shows a busy bar without a count (work of unknown length). Call
    from the GUI thread.
    """

    def __init__(self, unit: str = "it") -> None:
        self.unit = unit  # what the count counts, for the rate napari shows ("3.7 s/tile")
        self._bar = None
        self._desc = ""

    @property
    def active(self) -> bool:
        return self._bar is not None

    @property
    def bar(self):
        """The open :class:`napari.utils.progress`, or None."""
        return self._bar

    def show(self, desc: str, done: int = 0, total: int = 0) -> None:
        from napari.utils import progress

        done, total = max(0, int(done)), max(0, int(total))
        if total and done > total:
            total = done
        bar = self._bar
        if bar is None or done < bar.n:  # a new piece of work: a new bar
            self.end()
            bar = self._bar = progress(total=total, desc=desc, unit=self.unit)
            self._desc = desc
        if bar.total != total:
            bar.total = total
        if done > bar.n:
            bar.update(done - bar.n)
        if desc != self._desc:
            bar.set_description(desc)
            self._desc = desc

    def end(self) -> None:
        if self._bar is not None:
            bar, self._bar = self._bar, None
            bar.close()

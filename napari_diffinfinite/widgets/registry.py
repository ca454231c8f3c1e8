"""Which canvas is open in which viewer, and the signal that announces changes.

Light on purpose (Qt only, no zarr, no torch): the DiffInfinite widget follows its viewer's canvas through
:data:`canvas_registry` from the moment it is built, and must not import the canvas machinery to do so.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

from qtpy.QtCore import QObject, Signal

if TYPE_CHECKING:
    from .canvas_controller import CanvasController

__all__ = [
    "CanvasRegistry",
    "canvas_registry",
    "close_all_controllers",
    "controller_for",
    "disconnect",
    "disconnect_when_destroyed",
    "notify",
    "register",
    "unregister",
    "unwrap_viewer",
]

_controllers: dict[int, CanvasController] = {}


class CanvasRegistry(QObject):
    """Announces canvases opening and closing, so that a widget follows the canvas of its viewer without
    polling: ``changed(viewer)`` after a controller registers for ``viewer`` or closes."""

    changed = Signal(object)


canvas_registry = CanvasRegistry()


def disconnect(signal, slot) -> None:
    """``signal.disconnect(slot)``, quietly when they are not connected or the sender is gone."""
    with contextlib.suppress(TypeError, RuntimeError):
        signal.disconnect(slot)


def disconnect_when_destroyed(widget, sender, signal: str, slot) -> None:
    """Disconnect ``slot`` from ``sender``'s ``signal`` when the Qt ``widget`` is destroyed, quietly when the
    sender is gone first (at interpreter exit Qt deletes them in any order; reading the signal of a deleted
    sender raised inside Qt's destroyed handler and aborted the process)."""

    def forget(*_):
        with contextlib.suppress(TypeError, RuntimeError):
            getattr(sender, signal).disconnect(slot)

    widget.destroyed.connect(forget)


def notify(message: str, severity: str = "error") -> None:
    """A napari notification (``error``, ``warning`` or ``info``): what the user sees instead of a traceback."""
    from napari.utils.notifications import show_error, show_info, show_warning

    {"error": show_error, "warning": show_warning, "info": show_info}.get(severity, show_error)(message)


def unwrap_viewer(viewer):
    """The viewer itself: napari hands plugin widgets a PublicOnlyProxy of it; the registry keys on the viewer."""
    return getattr(viewer, "__wrapped__", viewer)


def controller_for(viewer) -> CanvasController | None:
    """The canvas controller of ``viewer`` (the canvas open in it), or None."""
    viewer = unwrap_viewer(viewer)
    ctrl = _controllers.get(id(viewer))
    return ctrl if ctrl is not None and not ctrl.closed and ctrl.viewer is viewer else None


def register(ctrl: CanvasController) -> None:
    """``ctrl`` becomes its viewer's canvas; the one open there before is closed."""
    previous = controller_for(ctrl.viewer)
    if previous is not None and previous is not ctrl:
        previous.close()
    _controllers[id(ctrl.viewer)] = ctrl
    canvas_registry.changed.emit(ctrl.viewer)


def unregister(ctrl: CanvasController) -> None:
    """``ctrl`` closed: its viewer has no canvas any more (unless another took its place)."""
    if _controllers.get(id(ctrl.viewer)) is ctrl:
        del _controllers[id(ctrl.viewer)]
    canvas_registry.changed.emit(ctrl.viewer)


def close_all_controllers() -> None:
    """Close every controller (write labels back, stop workers, release the stores' writer locks)."""
    for ctrl in list(_controllers.values()):
        ctrl.close()

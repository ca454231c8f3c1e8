"""A rater's survey session: configuration, the blinded trial list, answers timed and saved one by one, resume.

No napari, no Qt: the widget shows :attr:`Session.current` and calls :meth:`Session.answer`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from ..classes import FIVE_CLASSES
from .results import CONFIDENCES, Summary, append_row, read_rows, summary
from .trials import (
    REAL,
    SYNTHETIC,
    GeneratorSettings,
    Trial,
    build_trials,
    generate_patches,
    generated_sizes,
    list_images,
    load_patch,
    make_patches,
    rater_seed,
)


@dataclass
class SurveyConfig:
    """What the organiser chooses.

    - ``real_folder``: real patches (PNG / JPEG / TIFF; a ``<stem>_mask.png`` beside a patch gives its class).
    - synthetic patches: ``synthetic_folder`` (e.g. exported from a canvas) or ``generator`` (generated on the fly
      at the real patches' size) - exactly one of them.
    - ``rater_id``: written on every row; reopening with the same rater and CSV resumes.
    - ``seed``: the blinded order (None: a seed derived from the rater id, so each rater gets an order of their
      own that a resumed session repeats). ``n_trials``: None for every patch, else that many, balanced.
    - ``results_csv``: one row per answer, appended as it is given.
    - ``class_names``: names of the mask labels (the 5-class set by default).
    - ``pixel_size_um``: the real patches' magnification, when known: generation refuses a model of another one.
    - ``allow_size_mismatch``: by default real and synthetic patches must come in the same sizes (a size seen in
      one group only would tell raters the answer).
    """

    real_folder: Path
    rater_id: str
    results_csv: Path
    synthetic_folder: Path | None = None
    generator: GeneratorSettings | None = None
    seed: int | None = None
    n_trials: int | None = None
    class_names: Sequence[str] = field(default_factory=lambda: list(FIVE_CLASSES.names))
    pixel_size_um: float | None = None
    allow_size_mismatch: bool = False

    def __post_init__(self) -> None:
        self.real_folder = Path(self.real_folder).expanduser()
        self.results_csv = Path(self.results_csv).expanduser()
        if self.synthetic_folder is not None:
            self.synthetic_folder = Path(self.synthetic_folder).expanduser()
        if (self.synthetic_folder is None) == (self.generator is None):
            raise ValueError("give either a synthetic_folder or generator settings (exactly one)")
        self.rater_id = str(self.rater_id).strip()
        if not self.rater_id:
            raise ValueError("a rater id is needed (it is written on every row and used to resume)")
        if self.n_trials is not None and int(self.n_trials) < 1:
            raise ValueError(f"n_trials must be at least 1, got {self.n_trials}")

    @property
    def order_seed(self) -> int:
        return int(self.seed) if self.seed is not None else rater_seed(self.rater_id)


def _sizes(sizes) -> str:
    return ", ".join(f"{w}x{h}" for h, w in sorted(sizes))


def prepare_trials(
    config: SurveyConfig,
    *,
    progress: Callable[[int, int], None] | None = None,
    cancel: Callable[[], bool] | None = None,
) -> list[Trial]:
    """The blinded trial list of ``config``; generates (or reuses cached) synthetic patches when asked to.
    ``progress(done, total)`` counts generated patches."""
    real_paths = list_images(config.real_folder)
    if not real_paths:
        raise ValueError(f"{config.real_folder} holds no images")
    if config.synthetic_folder is not None:
        real, synthetic = make_patches(real_paths, list_images(config.synthetic_folder), config.class_names)
    else:
        real, _ = make_patches(real_paths, [], config.class_names)
        g = config.generator
        count = g.count
        if count is None:
            count = len(real) if config.n_trials is None else -(-int(config.n_trials) // 2)
        sizes = generated_sizes(g, real, int(count))
        paths = generate_patches(
            g, sizes, progress=progress, cancel=cancel, pixel_size_um=config.pixel_size_um
        )
        real, synthetic = make_patches(real_paths, paths, config.class_names)
    if not synthetic:
        raise ValueError("no synthetic patches: the folder holds no images, or the count is 0")
    real_sizes, synthetic_sizes = {p.size for p in real}, {p.size for p in synthetic}
    if real_sizes != synthetic_sizes and not config.allow_size_mismatch:
        raise ValueError(
            f"real patches are {_sizes(real_sizes)} px but synthetic ones {_sizes(synthetic_sizes)} px: the size "
            "would give the answer away; crop the patches to one size (or allow the mismatch on purpose)"
        )
    return build_trials(real, synthetic, seed=config.order_seed, n_trials=config.n_trials)


class Session:
    """One rater going through the trials. ``answer`` appends one CSV row at once; a session opened again with
    the same rater id and CSV starts at the first trial this rater has not answered.

    The clock (``time.monotonic`` by default) runs from :meth:`mark_shown` (called by the viewer when the patch
    is on screen; otherwise from when the trial became current) to :meth:`answer`.
    """

    def __init__(
        self, config: SurveyConfig, trials: Sequence[Trial], *, clock: Callable[[], float] = time.monotonic
    ):
        self.config = config
        self.trials = list(trials)
        self._clock = clock
        answered = {row["patch_id"] for row in read_rows(config.results_csv, config.rater_id)}
        self._answered = {t.number for t in self.trials if t.patch.patch_id in answered}
        self._position = -1
        self._shown_at: float | None = None
        self._advance()

    @classmethod
    def open(cls, config: SurveyConfig, *, progress=None, cancel=None, clock=time.monotonic) -> Session:
        """Build the trials of ``config`` (generating synthetic patches if asked) and resume where the rater
        stopped."""
        return cls(config, prepare_trials(config, progress=progress, cancel=cancel), clock=clock)

    # ------------------------------------------------------------------------------------------------ state

    def _advance(self) -> None:
        self._position = next(
            (i for i, t in enumerate(self.trials) if t.number not in self._answered), len(self.trials)
        )
        self._shown_at = None if self.done else self._clock()

    @property
    def total(self) -> int:
        return len(self.trials)

    @property
    def answered(self) -> int:
        return len(self._answered)

    @property
    def done(self) -> bool:
        return self._position >= len(self.trials)

    @property
    def current(self) -> Trial | None:
        """The trial to show now, or None when every trial is answered."""
        return None if self.done else self.trials[self._position]

    def current_image(self) -> np.ndarray:
        """The current patch's pixels (H, W, 3) uint8: pixels only, nothing that names the file."""
        if self.done:
            raise RuntimeError("the survey is finished")
        return load_patch(self.current.patch.path)

    def mark_shown(self) -> None:
        """Start the clock of the current trial (the patch is on screen now)."""
        if not self.done:
            self._shown_at = self._clock()

    # ------------------------------------------------------------------------------------------------ answers

    def answer(self, is_synthetic: bool, confidence: int, comment: str = "") -> dict:
        """Record the rater's answer to the current trial: one row appended to the CSV and synced before this
        returns; then the next trial becomes current. Returns the row written."""
        if self.done:
            raise RuntimeError("the survey is finished: there is no trial to answer")
        confidence = int(confidence)
        if confidence not in CONFIDENCES:
            raise ValueError(f"confidence must be 1..5, got {confidence}")
        seconds = max(0.0, self._clock() - self._shown_at)
        trial = self.current
        answer = SYNTHETIC if is_synthetic else REAL
        row = {
            "rater_id": self.config.rater_id,
            "trial": trial.number,
            "patch_id": trial.patch.patch_id,
            "truth": trial.patch.truth,
            "answer": answer,
            "correct": int(answer == trial.patch.truth),
            "confidence": confidence,
            "seconds": round(seconds, 3),
            "comment": str(comment or "").strip(),
            "class": trial.patch.class_name or "",
            "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        append_row(self.config.results_csv, row)
        self._answered.add(trial.number)
        self._advance()
        return row

    # ------------------------------------------------------------------------------------------------ results

    def rows(self) -> list[dict[str, str]]:
        """This rater's rows of the results CSV for this survey's patches."""
        ids = {t.patch.patch_id for t in self.trials}
        return [r for r in read_rows(self.config.results_csv, self.config.rater_id) if r["patch_id"] in ids]

    def summary(self) -> Summary:
        return summary(self.rows())

    def key(self) -> list[dict[str, str]]:
        """The organiser's key: patch id, truth, class and file of each trial (never shown to raters)."""
        return [
            {
                "trial": str(t.number),
                "patch_id": t.patch.patch_id,
                "truth": t.patch.truth,
                "class": t.patch.class_name or "",
                "path": str(t.patch.path),
            }
            for t in self.trials
        ]

"""A blinded real-vs-synthetic survey, as the DiffInfinite paper ran with pathologists (no napari, no Qt).

>>> from napari_diffinfinite.survey import SurveyConfig, GeneratorSettings, Session, summary
>>> config = SurveyConfig("real/", rater_id="rater-1", results_csv="survey.csv",
...                       generator=GeneratorSettings("embedded"), n_trials=20, seed=1)
>>> session = Session.open(config)          # generates the synthetic patches (cached), resumes a crashed run
>>> while not session.done:
...     image = session.current_image()     # show it; the truth stays in session.current.patch
...     session.mark_shown()
...     session.answer(is_synthetic=True, confidence=4, comment="")   # one CSV row, synced to disk
>>> print(session.summary().as_text())

The widget ``napari_diffinfinite.widgets.survey_widget`` is the napari face of this package. Synthetic images
are for research and demos, not for diagnosis.
"""

from .results import (
    COLUMNS,
    Answer,
    ClassScore,
    HistogramPlot,
    Summary,
    append_row,
    confidence_histogram,
    confidence_histogram_png,
    parse_row,
    read_rows,
    summary,
)
from .session import Session, SurveyConfig, prepare_trials
from .trials import (
    REAL,
    SYNTHETIC,
    GeneratorSettings,
    Patch,
    Trial,
    build_trials,
    list_images,
    load_patch,
    make_patches,
)

__all__ = [
    "COLUMNS",
    "REAL",
    "SYNTHETIC",
    "Answer",
    "ClassScore",
    "GeneratorSettings",
    "HistogramPlot",
    "Patch",
    "Session",
    "Summary",
    "SurveyConfig",
    "Trial",
    "append_row",
    "build_trials",
    "confidence_histogram",
    "confidence_histogram_png",
    "list_images",
    "load_patch",
    "make_patches",
    "parse_row",
    "prepare_trials",
    "read_rows",
    "summary",
]

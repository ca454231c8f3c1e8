"""Survey results: the CSV (one row per answer, written at once and synced), the summary figures and the
confidence histogram plot. Pure Python + numpy + Pillow: no napari, no Qt, no torch.

Positive = synthetic: sensitivity is the share of synthetic patches the raters called synthetic, specificity
the share of real patches they called real.
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .._atomic import fsync_dir
from .trials import REAL, SYNTHETIC

#: The columns of the results CSV, in order.
COLUMNS = (
    "rater_id",
    "trial",
    "patch_id",
    "truth",
    "answer",
    "correct",
    "confidence",
    "seconds",
    "comment",
    "class",
    "timestamp",
)
CONFIDENCES = (1, 2, 3, 4, 5)
NO_CLASS = "(no class)"


# --------------------------------------------------------------------------------------------------- the CSV


def _format_row(row: Mapping) -> list[str]:
    values = []
    for column in COLUMNS:
        value = row.get(column, "")
        if value is None:
            value = ""
        elif isinstance(value, bool):
            value = int(value)
        elif isinstance(value, float):
            value = f"{value:.3f}"
        # one record per line: a crash can then only ever cut the last line
        values.append(str(value).replace("\r\n", " ").replace("\n", " ").replace("\r", " "))
    return values


def _drop_partial_tail(fh) -> None:
    """Cut an unfinished last record (a crash mid-write) off a file opened "r+b"."""
    fh.seek(0, os.SEEK_END)
    size = fh.tell()
    if size == 0:
        return
    fh.seek(size - 1)
    if fh.read(1) == b"\n":
        return
    fh.seek(0)
    data = fh.read()
    keep = data.rfind(b"\n") + 1  # 0 when even the header is unfinished
    fh.truncate(keep)
    fh.flush()


def _header_of(fh) -> list[str] | None:
    fh.seek(0)
    first = fh.readline()
    if not first:
        return None
    return next(csv.reader([first.decode("utf-8-sig").rstrip("\r\n")]))


def append_row(path: str | os.PathLike, row: Mapping) -> None:
    """Append one answer to the results CSV and make it durable before returning (flush + fsync).

    Writes the header first when the file is new or empty; refuses a file whose header is not :data:`COLUMNS`;
    an unfinished last line left by a crash is cut off first."""
    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    created = not path.exists()
    with open(path, "a+b") as fh:
        _drop_partial_tail(fh)
        header = _header_of(fh)
        if header is not None and tuple(header) != COLUMNS:
            raise ValueError(f"{path} is not a survey results file (its columns are {header})")
        text = io.StringIO()
        writer = csv.writer(text, lineterminator="\n")
        if header is None:
            writer.writerow(COLUMNS)
        writer.writerow(_format_row(row))
        fh.seek(0, os.SEEK_END)
        fh.write(text.getvalue().encode("utf-8"))
        fh.flush()
        os.fsync(fh.fileno())
    if created:
        fsync_dir(path.parent)


def read_rows(path: str | os.PathLike, rater_id: str | None = None) -> list[dict[str, str]]:
    """The complete rows of a results CSV (all raters, or one), as strings; a missing file has none. An
    unfinished last line (crash mid-write) is ignored."""
    path = Path(path).expanduser()
    if not path.is_file():
        return []
    data = path.read_bytes().decode("utf-8-sig")
    if not data.endswith("\n"):
        data = data[: data.rfind("\n") + 1]
    reader = csv.reader(io.StringIO(data))
    header = next(reader, None)
    if header is None:
        return []
    if tuple(header) != COLUMNS:
        raise ValueError(f"{path} is not a survey results file (its columns are {header})")
    rows = []
    for record in reader:
        if len(record) != len(COLUMNS):
            continue
        row = dict(zip(COLUMNS, record, strict=True))
        if rater_id is None or row["rater_id"] == rater_id:
            rows.append(row)
    return rows


# ----------------------------------------------------------------------------------------------- the summary


@dataclass(frozen=True)
class Answer:
    """One row, typed."""

    truth: str
    answer: str
    confidence: int
    seconds: float | None
    class_name: str

    @property
    def correct(self) -> bool:
        return self.truth == self.answer


def _kind(value, column: str) -> str:
    v = str(value).strip().lower()
    if v not in (REAL, SYNTHETIC):
        raise ValueError(f"{column} must be {REAL!r} or {SYNTHETIC!r}, got {value!r}")
    return v


def parse_row(row: Mapping) -> Answer:
    """A CSV row (strings, or the typed values :class:`Session` writes) as an :class:`Answer`. ``correct`` is
    recomputed from truth and answer."""
    confidence = int(row["confidence"])
    if confidence not in CONFIDENCES:
        raise ValueError(f"confidence must be 1..5, got {confidence}")
    seconds = row.get("seconds")
    seconds = None if seconds in (None, "") else float(seconds)
    cls = row.get("class") or NO_CLASS
    return Answer(_kind(row["truth"], "truth"), _kind(row["answer"], "answer"), confidence, seconds, str(cls))


def _ratio(num: int, den: int) -> float | None:
    return num / den if den else None


@dataclass(frozen=True)
class ClassScore:
    n: int
    correct: int

    @property
    def accuracy(self) -> float | None:
        return _ratio(self.correct, self.n)


@dataclass(frozen=True)
class Summary:
    """The survey's figures; ratios are None where their denominator is 0."""

    n: int
    correct: int
    true_positives: int  # synthetic called synthetic
    false_negatives: int  # synthetic called real
    true_negatives: int  # real called real
    false_positives: int  # real called synthetic
    per_class: dict[str, ClassScore] = field(default_factory=dict)
    #: {"correct": [answers at confidence 1..5], "incorrect": [...]}
    confidence: dict[str, list[int]] = field(default_factory=dict)
    mean_seconds: float | None = None

    @property
    def accuracy(self) -> float | None:
        return _ratio(self.correct, self.n)

    @property
    def sensitivity(self) -> float | None:
        """Share of synthetic patches called synthetic."""
        return _ratio(self.true_positives, self.true_positives + self.false_negatives)

    @property
    def specificity(self) -> float | None:
        """Share of real patches called real."""
        return _ratio(self.true_negatives, self.true_negatives + self.false_positives)

    def as_text(self) -> str:
        """The figures as a few lines of plain text."""

        def pct(x):
            return "n/a" if x is None else f"{100 * x:.1f}%"

        n_syn = self.true_positives + self.false_negatives
        n_real = self.true_negatives + self.false_positives
        lines = [
            f"Answers: {self.n} ({n_real} real, {n_syn} synthetic patches)",
            f"Accuracy: {pct(self.accuracy)} ({self.correct} of {self.n})",
            f"Sensitivity (synthetic spotted): {pct(self.sensitivity)} ({self.true_positives} of {n_syn})",
            f"Specificity (real recognised): {pct(self.specificity)} ({self.true_negatives} of {n_real})",
            "Mean time per patch: " + ("n/a" if self.mean_seconds is None else f"{self.mean_seconds:.1f} s"),
        ]
        if self.per_class:
            lines.append("Accuracy per class:")
            for name, score in self.per_class.items():
                lines.append(f"  {name}: {pct(score.accuracy)} ({score.correct} of {score.n})")
        lines.append("Confidence 1..5, correct: " + " ".join(str(c) for c in self.confidence["correct"]))
        lines.append("Confidence 1..5, incorrect: " + " ".join(str(c) for c in self.confidence["incorrect"]))
        return "\n".join(lines)


def summary(rows: Iterable[Mapping | Answer]) -> Summary:
    """Accuracy, sensitivity / specificity (positive = synthetic), accuracy per class, confidence counts split by
    correct / incorrect, and mean seconds per answer, over ``rows`` (CSV rows or :class:`Answer`)."""
    answers = [r if isinstance(r, Answer) else parse_row(r) for r in rows]
    tp = sum(a.truth == SYNTHETIC and a.answer == SYNTHETIC for a in answers)
    fn = sum(a.truth == SYNTHETIC and a.answer == REAL for a in answers)
    tn = sum(a.truth == REAL and a.answer == REAL for a in answers)
    fp = sum(a.truth == REAL and a.answer == SYNTHETIC for a in answers)
    per_class: dict[str, ClassScore] = {}
    for name in sorted({a.class_name for a in answers}, key=lambda s: (s == NO_CLASS, s)):
        of = [a for a in answers if a.class_name == name]
        per_class[name] = ClassScore(len(of), sum(a.correct for a in of))
    confidence = {
        "correct": [sum(a.correct and a.confidence == c for a in answers) for c in CONFIDENCES],
        "incorrect": [sum((not a.correct) and a.confidence == c for a in answers) for c in CONFIDENCES],
    }
    times = [a.seconds for a in answers if a.seconds is not None]
    return Summary(
        n=len(answers),
        correct=tp + tn,
        true_positives=tp,
        false_negatives=fn,
        true_negatives=tn,
        false_positives=fp,
        per_class=per_class,
        confidence=confidence,
        mean_seconds=sum(times) / len(times) if times else None,
    )


# --------------------------------------------------------------------------------------------- the histogram

#: Okabe-Ito blue and vermilion: told apart with every common colour-vision deficiency.
CORRECT_COLOR = (0, 114, 178)
INCORRECT_COLOR = (213, 94, 0)
_INK = (30, 30, 30)
_GRID = (222, 222, 222)


@dataclass(frozen=True)
class Bar:
    confidence: int
    kind: str  # "correct" | "incorrect"
    count: int
    x0: int  # first pixel column
    x1: int  # last pixel column
    top: int  # first pixel row of the bar (== bottom + 1 when the count is 0)
    bottom: int  # last pixel row of the plot area (the bar stands on it)

    @property
    def height(self) -> int:
        return self.bottom + 1 - self.top


@dataclass(frozen=True)
class HistogramPlot:
    image: np.ndarray  # (H, W, 3) uint8
    counts: dict[str, list[int]]
    bars: list[Bar]
    y_max: int  # the count at the top of the plot area
    plot_box: tuple[int, int, int, int]  # left, top, right, bottom (inclusive pixel rows / columns)

    def png(self) -> bytes:
        from PIL import Image

        buf = io.BytesIO()
        Image.fromarray(self.image).save(buf, format="PNG")
        return buf.getvalue()


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def _nice_top(largest: int) -> tuple[int, int]:
    """(top of the axis, tick step): the smallest step of 1, 2, 5, 10, 20, 25, 50, 100, ... with at most 6 steps."""
    largest = max(1, int(largest))
    scale = 1
    while True:
        for base in (1, 2, 5) if scale == 1 else (1, 2, 2.5, 5):
            step = int(base * scale)
            if math.ceil(largest / step) <= 6:
                return math.ceil(largest / step) * step, step
        scale *= 10


def confidence_histogram(rows_or_summary, *, width: int = 560, height: int = 380) -> HistogramPlot:
    """A bar chart of answers per confidence (1..5), correct and incorrect side by side, with axes, ticks,
    counts over the bars and a legend. Takes rows (as :func:`summary`) or a :class:`Summary`."""
    from PIL import Image, ImageDraw

    s = rows_or_summary if isinstance(rows_or_summary, Summary) else summary(rows_or_summary)
    counts = {k: list(v) for k, v in s.confidence.items()}
    image = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    small, normal = _font(12), _font(14)
    left, top, right, bottom = 62, 70, width - 18, height - 58
    y_max, step = _nice_top(max(counts["correct"] + counts["incorrect"]))
    plot_h = bottom + 1 - top

    def y_of(count: float) -> int:  # the first pixel row of a bar of ``count``
        return bottom + 1 - round(count / y_max * plot_h)

    # title and legend
    title = f"Confidence of {s.n} answers: correct vs incorrect"
    tw = draw.textlength(title, font=normal)
    draw.text(((width - tw) / 2, 10), title, fill=_INK, font=normal)
    lx = left
    for label, color in (("correct", CORRECT_COLOR), ("incorrect", INCORRECT_COLOR)):
        draw.rectangle([lx, 40, lx + 13, 53], fill=color)
        draw.text((lx + 19, 39), label, fill=_INK, font=small)
        lx += 19 + int(draw.textlength(label, font=small)) + 24
    # grid, ticks and the y axis title
    for value in range(0, y_max + 1, step):
        y = min(y_of(value), bottom)
        if value:
            draw.line([left, y, right, y], fill=_GRID)
        draw.line([left - 5, y, left - 1, y], fill=_INK)
        text = str(value)
        draw.text((left - 8 - draw.textlength(text, font=small), y - 7), text, fill=_INK, font=small)
    ylabel = Image.new("RGB", (int(draw.textlength("answers", font=small)) + 4, 16), (255, 255, 255))
    ImageDraw.Draw(ylabel).text((2, 0), "answers", fill=_INK, font=small)
    ylabel = ylabel.rotate(90, expand=True)
    image.paste(ylabel, (6, (top + bottom - ylabel.height) // 2))
    # bars
    group = (right - left + 1) / len(CONFIDENCES)
    bar_w = max(2, int(group * 0.34))
    bars = []
    for g, c in enumerate(CONFIDENCES):
        centre = left + group * (g + 0.5)
        for kind, x0 in (("correct", round(centre) - 1 - bar_w), ("incorrect", round(centre) + 1)):
            n = counts[kind][g]
            bar_top = y_of(n)
            if n:
                color = CORRECT_COLOR if kind == "correct" else INCORRECT_COLOR
                draw.rectangle([x0, bar_top, x0 + bar_w - 1, bottom], fill=color)
                text = str(n)
                draw.text(
                    (x0 + (bar_w - draw.textlength(text, font=small)) / 2, bar_top - 15),
                    text,
                    fill=_INK,
                    font=small,
                )
            bars.append(Bar(c, kind, n, x0, x0 + bar_w - 1, bar_top, bottom))
        label = str(c)
        draw.text(
            (centre - draw.textlength(label, font=normal) / 2, bottom + 8), label, fill=_INK, font=normal
        )
    # axes last, over the bars' feet
    draw.line([left - 1, top, left - 1, bottom + 1], fill=_INK)
    draw.line([left - 1, bottom + 1, right, bottom + 1], fill=_INK)
    xlabel = "confidence (1 = guessing, 5 = certain)"
    draw.text(
        ((left + right - draw.textlength(xlabel, font=small)) / 2, bottom + 30), xlabel, fill=_INK, font=small
    )
    return HistogramPlot(np.asarray(image).copy(), counts, bars, y_max, (left, top, right, bottom))


def confidence_histogram_png(rows_or_summary, path: str | os.PathLike | None = None) -> bytes:
    """The confidence histogram (:func:`confidence_histogram`) as PNG bytes; also written to ``path`` if given."""
    data = confidence_histogram(rows_or_summary).png()
    if path is not None:
        Path(path).expanduser().write_bytes(data)
    return data

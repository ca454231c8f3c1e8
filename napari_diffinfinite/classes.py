"""The tissue-class label sets of the DiffInfinite models, with one colour palette for both.

Label ids are what the models see; 0 ("Unknown") is also the classifier-free-guidance null condition and is
drawn transparent. Classes that occur in both sets share a colour, so a mask looks the same in either.
Pure Python: no napari, no Qt, no torch.
"""

from __future__ import annotations

from dataclasses import dataclass

RGBA = tuple[float, float, float, float]

TRANSPARENT: RGBA = (0.0, 0.0, 0.0, 0.0)
#: Colour napari draws for a label id outside the set (e.g. 7 painted into a 5-class mask).
OUT_OF_SET: RGBA = (0.5, 0.5, 0.5, 1.0)


def _hex(code: str) -> RGBA:
    code = code.lstrip("#")
    r, g, b = (int(code[i : i + 2], 16) / 255.0 for i in (0, 2, 4))
    return (r, g, b, 1.0)


@dataclass(frozen=True)
class TissueClass:
    id: int
    name: str
    color: RGBA

    @property
    def hex(self) -> str:
        """``#rrggbb`` of the colour (the alpha is dropped)."""
        return "#" + "".join(f"{round(c * 255):02x}" for c in self.color[:3])


@dataclass(frozen=True)
class ClassSet:
    key: str
    title: str
    classes: tuple[TissueClass, ...]

    def __post_init__(self) -> None:
        if [c.id for c in self.classes] != list(range(len(self.classes))):
            raise ValueError(f"class ids of {self.key!r} must be 0..{len(self.classes) - 1} in order")

    def __len__(self) -> int:
        return len(self.classes)

    def __iter__(self):
        return iter(self.classes)

    def __getitem__(self, label: int) -> TissueClass:
        return self.classes[label]

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.classes]

    def color_dict(self) -> dict[int | None, RGBA]:
        """``{label id: RGBA}``, plus ``None`` for ids outside the set; a napari ``DirectLabelColormap``
        accepts this mapping as it is (``Labels(colormap=...)``)."""
        colors: dict[int | None, RGBA] = {c.id: c.color for c in self.classes}
        colors[None] = OUT_OF_SET
        return colors

    def features(self) -> dict[str, list]:
        """Per-label table for a napari Labels layer (``features=``): the status bar then shows the class name."""
        return {"index": [c.id for c in self.classes], "class": self.names}


_COLORS = {
    "Unknown": None,
    "Alveole": "#9ecae1",
    "Artery": "#e377c2",
    "Artifact": "#7f7f7f",
    "Carcinoma": "#d62728",
    "Cartilage": "#17becf",
    "Connective tissue": "#ff9896",
    "Necrosis": "#bcbd22",
    "Tumor stroma": "#2ca02c",
    "Others": "#1f77b4",
}


def _make(key: str, title: str, names: list[str]) -> ClassSet:
    return ClassSet(
        key,
        title,
        tuple(
            TissueClass(i, n, TRANSPARENT if _COLORS[n] is None else _hex(_COLORS[n]))
            for i, n in enumerate(names)
        ),
    )


FIVE_CLASSES = _make("5", "5 classes", ["Unknown", "Carcinoma", "Necrosis", "Tumor stroma", "Others"])
TEN_CLASSES = _make(
    "10",
    "10 classes",
    [
        "Unknown",
        "Alveole",
        "Artery",
        "Artifact",
        "Carcinoma",
        "Cartilage",
        "Connective tissue",
        "Necrosis",
        "Tumor stroma",
        "Others",
    ],
)

CLASS_SETS: dict[int, ClassSet] = {5: FIVE_CLASSES, 10: TEN_CLASSES}

#: Context prompts of the mask model (its ``classes`` argument).
CONTEXT_PROMPTS: dict[int, str] = {0: "adenocarcinoma", 1: "squamous cell carcinoma"}


def class_set(num_classes: int) -> ClassSet:
    try:
        return CLASS_SETS[num_classes]
    except KeyError:
        raise ValueError(f"no class set with {num_classes} classes; known: {sorted(CLASS_SETS)}") from None

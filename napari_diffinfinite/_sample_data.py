"""napari sample data: a painted 5-class tissue mask to start from (``File > Open Sample > napari-diffinfinite``)."""

from __future__ import annotations

import numpy as np

from . import DISCLAIMER
from ._resources import resource_path
from .classes import FIVE_CLASSES

DEMO_MASK_FILE = ("masks", "squamous_mask_example_5classes.png")
#: Physical pixel size of the demo mask (it is at image resolution; the paper's data is 20x, ~0.5 um/px).
DEMO_MASK_UM_PER_PX = 0.5


def load_demo_mask() -> np.ndarray:
    """The demo mask as 5-class label ids (uint8, 2560 x 2560, values in 0..4).

    The shipped PNG stores labels scaled to 0..255 (0, 63, 191, 255); ``round(v / (255 / 4))`` undoes that.
    """
    from PIL import Image

    with Image.open(resource_path(*DEMO_MASK_FILE)) as im:
        values = np.asarray(im.convert("L"))
    step = 255 / (len(FIVE_CLASSES) - 1)
    return np.rint(values / step).astype(np.uint8)


def demo_mask() -> list[tuple]:
    """LayerData for napari: the demo mask as a Labels layer with the 5-class names and colours."""
    labels = load_demo_mask()
    kwargs = {
        "name": "DiffInfinite demo mask",
        "scale": (DEMO_MASK_UM_PER_PX, DEMO_MASK_UM_PER_PX),
        "units": ("um", "um"),
        "colormap": FIVE_CLASSES.color_dict(),
        "features": FIVE_CLASSES.features(),
        "opacity": 0.6,
        "metadata": {
            "diffinfinite": {
                "class_set": FIVE_CLASSES.key,
                "class_names": FIVE_CLASSES.names,
                "context_prompt": 1,  # squamous cell carcinoma, as the file name says
                "um_per_px": DEMO_MASK_UM_PER_PX,
                "source": "DiffInfinite reference sample data (MIT License, Copyright (c) 2023 diffinfinite)",
            },
            "disclaimer": DISCLAIMER,
        },
    }
    return [(labels, kwargs, "labels")]

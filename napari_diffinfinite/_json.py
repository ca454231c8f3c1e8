"""Plain JSON values from what settings and reports hold (numpy scalars and arrays, paths, tuples, sets,
dataclasses): one conversion for the canvas store's attributes, export sidecars and evaluation reports."""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping

import numpy as np


def plain_json(value, *, non_finite: str = "raise"):
    """``value`` as dicts, lists, str, int, float, bool and None. ``non_finite``: ``"raise"`` (settings: JSON
    cannot store inf or nan) or ``"null"`` (reports: an exact reconstruction's infinite PSNR becomes null).
    Raises ``TypeError`` for anything else."""

    def convert(v):
        if isinstance(v, Mapping):
            return {str(k): convert(x) for k, x in v.items()}
        if dataclasses.is_dataclass(v) and not isinstance(v, type):
            return convert(dataclasses.asdict(v))
        if isinstance(v, (list, tuple)):
            return [convert(x) for x in v]
        if isinstance(v, (set, frozenset)):
            return sorted(convert(x) for x in v)
        if isinstance(v, np.ndarray):
            return convert(v.tolist())
        if isinstance(v, np.generic):
            return convert(v.item())
        if isinstance(v, os.PathLike):
            return os.fspath(v)
        if isinstance(v, float) and not math.isfinite(v):
            if non_finite == "null":
                return None
            raise ValueError(f"settings hold a non-finite number ({v}), which JSON cannot store")
        if v is None or isinstance(v, (str, int, float, bool)):
            return v
        raise TypeError(f"settings hold a {type(v).__name__} ({v!r}), which cannot be saved as JSON")

    return convert(value)

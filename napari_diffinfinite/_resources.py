"""Where the shipped resources live, for an editable install and for an installed wheel alike.

The top-level ``resources/`` folder is installed as the package ``napari_diffinfinite.resources``
(``package_dir`` in setup.cfg), so ``importlib.resources`` finds it either way.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def resource_path(*parts: str) -> Path:
    """Path of a shipped resource file or folder, e.g. ``resource_path("vae", "sd2-base", "config.json")``."""
    root = Path(str(resources.files("napari_diffinfinite.resources")))
    path = root.joinpath(*parts)
    if not path.exists():
        raise FileNotFoundError(
            f"shipped resource {'/'.join(parts)!r} is missing from {root}; reinstall the package"
        )
    return path

"""napari's reader preferences for what this plugin writes: canvases and exports reopen with its reader.

Why: napari offers every reader that accepts a folder and npe2 has no priority between plugins, so a canvas
dropped on the viewer would ask which plugin to use (see :mod:`napari_diffinfinite._reader`).
"""

from __future__ import annotations

import os

PLUGIN_NAME = "napari-diffinfinite"


def _preference_pattern(path) -> str:
    real = os.path.realpath(os.fspath(path))
    return real + os.sep if os.path.isdir(real) else real


def remember_reader(path) -> bool:
    """Make napari open ``path`` (a canvas folder or one of our exports) with this plugin's reader, through
    napari's reader preferences (module docstring); our entries for paths that no longer exist are dropped.
    Returns whether the preferences changed. Never raises (a napari without settings, a read-only settings file:
    the user is asked instead)."""
    try:
        from napari.settings import get_settings

        prefs = get_settings().plugins
        current = dict(prefs.extension2reader)
        pattern = _preference_pattern(path)
        kept = {
            k: v
            for k, v in current.items()
            if v != PLUGIN_NAME or not os.path.isabs(k) or os.path.exists(k.rstrip(os.sep) or os.sep)
        }
        if pattern not in kept:  # a user's own choice for this path stays
            kept[pattern] = PLUGIN_NAME
        if kept == current:
            return False
        prefs.extension2reader = kept
        return True
    except Exception:  # noqa: BLE001 - a preference is a convenience, never a failure
        return False

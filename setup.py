"""Package list for setuptools; everything else is in setup.cfg.

Every package under ``napari_diffinfinite/`` (a folder with ``__init__.py``) is found automatically, and the
top-level ``resources/`` folder is installed as ``napari_diffinfinite.resources`` (``package_dir`` in setup.cfg).
tests/test_packaging.py checks both in a built wheel.
"""

from setuptools import find_packages, setup

setup(
    packages=find_packages(include=["napari_diffinfinite", "napari_diffinfinite.*"])
    + ["napari_diffinfinite.resources"],
)

"""Data shipped with napari-diffinfinite (installed as the package ``napari_diffinfinite.resources``)."""

"""The napari dock widgets of napari-diffinfinite (thin: the logic lives in Qt-free packages)."""

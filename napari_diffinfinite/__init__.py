"""napari-diffinfinite: DiffInfinite (hierarchical mask -> H&E diffusion with random-patch sampling) in napari.

Generated images are for research and demos, not for diagnosis.
"""

__version__ = "0.1.0"

#: Shown wherever the plugin shows or makes images (layer metadata, widget, CLI).
DISCLAIMER = (
    "Synthetic histology for research and demos only - not for diagnosis or any clinical decision. "
    "Generated images and masks do not depict real patients."
)

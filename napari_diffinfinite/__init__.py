"""napari-diffinfinite: DiffInfinite (hierarchical mask -> H&E diffusion with random-patch sampling) in napari.

Generated images are for research and demos, not for diagnosis.
"""

__version__ = "0.1.0"

"""napari-diffinfinite: DiffInfinite (hierarchical mask -> H&E diffusion with random-patch sampling) in napari.

Generated images are for research and demos, not for diagnosis.
"""

__version__ = "0.1.0"

#: Shown wherever the plugin shows or makes images (layer metadata, widget, CLI).
DISCLAIMER = (
    "Synthetic histology for research and demos only - not for diagnosis or any clinical decision. "
    "Generated images and masks do not depict real patients."
)

_API = {"load_model", "generate", "generate_mask", "DiffInfiniteModel", "GenerationResult"}


def __getattr__(name):
    # the generation API imports torch; napari reads the plugin manifest without paying for it
    if name in _API:
        from . import generation

        return getattr(generation, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

"""The demo-mask sample as LayerData (no GUI)."""

import numpy as np
from PIL import Image

from napari_diffinfinite import DISCLAIMER
from napari_diffinfinite._resources import resource_path
from napari_diffinfinite._sample_data import demo_mask, load_demo_mask
from napari_diffinfinite.classes import FIVE_CLASSES


def test_demo_mask_labels_undo_the_0_255_scaling():
    raw = np.asarray(Image.open(resource_path("masks", "squamous_mask_example_5classes.png")))
    assert raw.shape == (2560, 2560) and raw.dtype == np.uint8
    assert set(np.unique(raw).tolist()) == {0, 63, 191, 255}
    labels = load_demo_mask()
    assert labels.shape == (2560, 2560) and labels.dtype == np.uint8
    # 0 -> 0 Unknown, 63 -> 1 Carcinoma, 191 -> 3 Tumor stroma, 255 -> 4 Others
    for value, label in {0: 0, 63: 1, 191: 3, 255: 4}.items():
        assert np.all(labels[raw == value] == label)
    # the painted classes cover the mask; Unknown is a sliver
    assert (labels == 0).mean() < 0.01 and (labels == 1).mean() > 0.3 and (labels == 3).mean() > 0.3


def test_demo_mask_layer_data():
    ((data, kwargs, layer_type),) = demo_mask()
    assert layer_type == "labels"
    assert data.shape == (2560, 2560)
    assert kwargs["scale"] == (0.5, 0.5)
    assert kwargs["units"] == ("um", "um")
    assert kwargs["colormap"] == FIVE_CLASSES.color_dict()
    assert kwargs["features"]["class"] == FIVE_CLASSES.names
    assert kwargs["metadata"]["disclaimer"] == DISCLAIMER
    assert "not for diagnosis" in DISCLAIMER
    assert kwargs["metadata"]["diffinfinite"]["class_set"] == "5"


def test_the_manifest_says_what_the_loaded_model_says(tiny_model_dir, tiny_model_dir_4x):
    """The canvas of a model not loaded yet is made from its manifest: it must equal the loaded model's."""
    import dataclasses

    from napari_diffinfinite.generation import load_model
    from napari_diffinfinite.model_manifest import read_manifest

    for source in ("embedded", str(tiny_model_dir), str(tiny_model_dir_4x)):
        manifest, model = read_manifest(source), load_model(source)
        for field in dataclasses.fields(manifest):
            assert getattr(manifest, field.name) == getattr(model, field.name), (source, field.name)
    assert read_manifest("diffinfinite") is None  # the released checkpoints: known once loaded
    assert read_manifest(tiny_model_dir.parent) is None  # not a model folder


def test_the_demo_canvas_is_made_from_the_manifest_without_importing_torch(tmp_path):
    """Importing torch is most of the 3-4 s that opening the demo froze napari for."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from napari_diffinfinite._sample_data import create_demo_canvas\n"
        "from napari_diffinfinite.model_manifest import read_manifest\n"
        f"store, rect = create_demo_canvas({str(tmp_path / 'c')!r}, read_manifest('embedded'))\n"
        "print(store.model_name, store.latent_channels, 'torch' in sys.modules)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["embedded", "8", "False"]

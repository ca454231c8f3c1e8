"""Packaging: resources are found from the editable install and from a wheel installed elsewhere, and the
wheel carries every subpackage, every resource file and the napari manifest."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import napari_diffinfinite
from napari_diffinfinite._resources import resource_path

REPO = Path(__file__).resolve().parents[1]
PACKAGE_DIR = REPO / "napari_diffinfinite"
RESOURCES_DIR = REPO / "resources"
# Not part of the distribution; left out of the copy the wheel is built from.
_BUILD_IGNORE = shutil.ignore_patterns(
    ".git", "build", "dist", "*.egg-info", "__pycache__", "*.pyc", ".venv*", "venv*", ".pytest_cache", "tests"
)


def _source_packages() -> set[str]:
    """Dotted names of the packages in the source tree (folders with __init__.py)."""
    names = {
        ".".join(init.parent.relative_to(REPO).parts)
        for init in PACKAGE_DIR.rglob("__init__.py")
        if "__pycache__" not in init.parts
    }
    names.add("napari_diffinfinite.resources")
    return names


def _source_modules() -> set[str]:
    """Paths (relative to the repo) of the package's .py files, as the wheel should hold them."""
    return {
        p.relative_to(REPO).as_posix() for p in PACKAGE_DIR.rglob("*.py") if "__pycache__" not in p.parts
    }


def _resource_files() -> set[str]:
    return {
        p.relative_to(RESOURCES_DIR).as_posix()
        for p in RESOURCES_DIR.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
    }


# -- editable install ------------------------------------------------------------------------------------------
def test_editable_install_imports_from_the_repo():
    assert Path(napari_diffinfinite.__file__).resolve().parent == PACKAGE_DIR


def test_resource_path_in_editable_install():
    config = resource_path("vae", "sd2-base", "config.json")
    assert config.resolve() == (RESOURCES_DIR / "vae" / "sd2-base" / "config.json").resolve()
    assert json.loads(config.read_text())["latent_channels"] == 4
    assert resource_path("masks", "squamous_mask_example_5classes.png").is_file()
    assert resource_path("vae").is_dir()


def test_resource_path_missing_file_is_a_clear_error():
    with pytest.raises(FileNotFoundError, match="no/such.file"):
        resource_path("no", "such.file")


# -- built wheel, installed elsewhere -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """A wheel built (without build isolation) from a clean copy of the source tree."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    shutil.copytree(REPO, src, ignore=_BUILD_IGNORE)
    out = tmp / "dist"
    proc = subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(out), str(src)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    (whl,) = out.glob("napari_diffinfinite-*.whl")
    return whl


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> Path:
    """The wheel installed with ``pip install --target`` into a folder outside the repository."""
    target = tmp_path_factory.mktemp("site")
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--target", str(target), str(wheel)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return target


def test_every_source_folder_with_modules_is_a_regular_package():
    """A folder of modules without __init__.py (e.g. one left uncommitted) is silently left out of the wheel."""
    folders = {(REPO / m).parent for m in _source_modules()}
    missing = sorted(f.relative_to(REPO).as_posix() for f in folders if not (f / "__init__.py").is_file())
    assert not missing, f"folders with modules but no __init__.py (add and commit one): {missing}"


def test_wheel_contains_every_subpackage_and_resource(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    missing_modules = _source_modules() - names
    assert not missing_modules, f"modules missing from the wheel: {sorted(missing_modules)}"
    packages_in_wheel = {n[: -len("/__init__.py")].replace("/", ".") for n in names if n.endswith("/__init__.py")}
    missing = _source_packages() - packages_in_wheel
    assert not missing, f"packages missing from the wheel (fix the packages list in setup.py): {sorted(missing)}"
    assert not {n for n in names if n.startswith("resources/")}, "resources/ must install under napari_diffinfinite/"
    resources_in_wheel = {
        n[len("napari_diffinfinite/resources/") :] for n in names if n.startswith("napari_diffinfinite/resources/")
    }
    missing_files = _resource_files() - resources_in_wheel
    assert not missing_files, f"resource files missing from the wheel: {sorted(missing_files)}"
    assert not any(n.endswith(".pyc") for n in names)
    assert "napari_diffinfinite/napari.yaml" in names

    (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "napari-diffinfinite = napari_diffinfinite:napari.yaml" in text
    assert "diffinfinite = napari_diffinfinite.cli:main" in text



_QT_BINDINGS = {"pyqt5", "pyqt6", "pyside2", "pyside6"}


def test_wheel_requires_no_qt_binding_but_offers_both_as_extras(wheel):
    """A plain install must not pull a second Qt binding next to the user's napari; the extras give one."""
    (metadata,) = [n for n in zipfile.ZipFile(wheel).namelist() if n.endswith(".dist-info/METADATA")]
    lines = zipfile.ZipFile(wheel).read(metadata).decode().splitlines()
    requires = [line.split(":", 1)[1].strip() for line in lines if line.startswith("Requires-Dist:")]

    def name(req: str) -> str:
        return req.split(";")[0].split("[")[0].split("<")[0].split(">")[0].split("=")[0].strip().lower()

    plain = {name(r) for r in requires if "extra ==" not in r}
    assert not plain & _QT_BINDINGS, f"a plain install pulls a Qt binding: {sorted(plain & _QT_BINDINGS)}"
    assert {"qtpy", "napari"} <= plain
    napari_req = next(r for r in requires if name(r) == "napari")
    assert "<0.11" in napari_req and ">=0.9.2" in napari_req, napari_req
    extras = {(name(r), r.split("extra ==")[1].strip(" '\"")) for r in requires if "extra ==" in r}
    assert ("pyqt6", "pyqt6") in extras and ("pyqt5", "pyqt5") in extras, sorted(extras)
    pyqt6 = next(r for r in requires if name(r) == "pyqt6")
    assert ">=6.7" in pyqt6, "napari 0.10 needs Qt >= 6.7"

_PROBE = r"""
import json, sys
from importlib import resources
import napari_diffinfinite
from napari_diffinfinite._resources import resource_path
from napari_diffinfinite._sample_data import load_demo_mask
import npe2

manifest = resources.files("napari_diffinfinite") / "napari.yaml"
pm = npe2.PluginManifest.from_file(str(manifest))
mask = load_demo_mask()
print(json.dumps({
    "file": napari_diffinfinite.__file__,
    "config": str(resource_path("vae", "sd2-base", "config.json")),
    "latent_channels": json.loads(resource_path("vae", "sd2-base", "config.json").read_text())["latent_channels"],
    "manifest": str(manifest),
    "plugin": pm.name,
    "sample_keys": [s.key for s in pm.contributions.sample_data],
    "mask_shape": list(mask.shape),
    "mask_labels": sorted(int(v) for v in set(mask.ravel().tolist())),
}))
"""


def test_installed_wheel_finds_its_resources(installed, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(installed)}
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    found = json.loads(proc.stdout.strip().splitlines()[-1])
    target = installed.resolve()
    for key in ("file", "config", "manifest"):
        path = Path(found[key]).resolve()
        assert path.is_relative_to(target), f"{key} came from {path}, not from the installed wheel in {target}"
        assert not path.is_relative_to(REPO)
    assert found["latent_channels"] == 4
    assert found["plugin"] == "napari-diffinfinite"
    assert found["sample_keys"] == ["demo_canvas", "demo_mask"]  # the demo canvas first
    assert found["mask_shape"] == [2560, 2560]
    assert found["mask_labels"] == [0, 1, 3, 4]


def _imports(path: Path) -> set[str]:
    """Absolute names of the modules ``path`` imports, at any depth (function-level imports too)."""
    import ast

    module = ".".join(path.relative_to(REPO).with_suffix("").parts)
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    if path.name == "__init__.py":
        module = package = module[: -len(".__init__")]
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            target = ".".join([*base, node.module] if node.module else base)
            names.add(target)
            names.update(f"{target}.{alias.name}" for alias in node.names)
    return names


def test_layers_import_one_way():
    """The canvas knows nothing of export files, widgets, napari or Qt; widgets do not import the reader;
    only the command line's own modules import it (issue 16 found cli <-> distributed, _reader <->
    canvas_controller, canvas -> io and _widget -> cli)."""
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        names = _imports(path)
        rel = path.relative_to(REPO).as_posix()
        if rel.startswith("napari_diffinfinite/canvas/"):
            above = {n for n in names if n.split(".")[0] in {"napari", "qtpy", "superqt", "magicgui"}
                     or n.startswith(("napari_diffinfinite.io", "napari_diffinfinite.widgets",
                                      "napari_diffinfinite._widget", "napari_diffinfinite.cli",
                                      "napari_diffinfinite.distributed"))}
            assert not above, f"{rel} imports a layer above the canvas: {sorted(above)}"
        if rel.startswith("napari_diffinfinite/widgets/"):  # the reader drives widgets, not the other way
            assert not {n for n in names if n.startswith("napari_diffinfinite._reader")}, f"{rel} imports _reader"
        if rel not in {"napari_diffinfinite/cli.py", "napari_diffinfinite/__main__.py"}:
            cli = {n for n in names if n == "napari_diffinfinite.cli" or n.startswith("napari_diffinfinite.cli.")}
            assert not cli, f"{rel} imports the command line"


def test_plugin_code_does_not_import_a_qt_binding_directly():
    """Qt only through qtpy (napari's guidance for plugins): the user's binding, whichever it is."""
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        bindings = {n for n in _imports(path) if n.split(".")[0] in {"PyQt5", "PyQt6", "PySide2", "PySide6"}}
        assert not bindings, f"{path}: {sorted(bindings)}"

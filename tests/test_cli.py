"""The command line: info, demo (with napari's event loop stubbed), python -m."""

from __future__ import annotations

import subprocess
import sys

import pytest

import napari_diffinfinite
from napari_diffinfinite import cli


def test_info_prints_versions_and_device(capsys):
    import torch

    assert cli.main(["info"]) == 0
    out = capsys.readouterr().out
    assert f"napari-diffinfinite {napari_diffinfinite.__version__}" in out
    assert f"torch {torch.__version__}" in out
    device_line = next(line for line in out.splitlines() if line.startswith("device "))
    assert device_line.split()[1].split(":")[0] in {"cpu", "cuda", "mps"}
    assert next(line for line in out.splitlines() if line.startswith("Qt binding ")).split()[2] in {
        "PyQt6", "PyQt5", "PySide6", "PySide2"}
    assert "not for diagnosis" in out


_WITHOUT_QT = r"""
import importlib.abc, sys
class HideQt(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {"PyQt5", "PyQt6", "PySide2", "PySide6"}:
            raise ImportError(f"No module named {name!r} (hidden by the test)")
sys.meta_path.insert(0, HideQt())
from napari_diffinfinite import cli
sys.exit(cli.main(sys.argv[1:]))
"""


def test_demo_without_a_qt_binding_says_which_extra_to_install():
    """The plugin requires no binding (napari users have one); where none is installed, say how to get one."""
    demo = subprocess.run([sys.executable, "-c", _WITHOUT_QT, "demo"], check=False, capture_output=True, text=True,
                          timeout=120)
    assert demo.returncode == 2, demo.stderr
    assert "pip install 'napari-diffinfinite[pyqt6]'" in demo.stderr
    assert "Traceback" not in demo.stderr
    info = subprocess.run([sys.executable, "-c", _WITHOUT_QT, "info"], check=False, capture_output=True, text=True,
                          timeout=120)
    assert info.returncode == 0, info.stderr
    assert "Qt binding none" in info.stdout


def test_a_command_is_required(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main([])
    assert exc.value.code == 2
    assert "demo" in capsys.readouterr().err


def test_python_dash_m_runs_the_cli():
    proc = subprocess.run(
        [sys.executable, "-m", "napari_diffinfinite", "--version"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"diffinfinite {napari_diffinfinite.__version__}"


def test_demo_opens_demo_mode_with_the_widget_one_click_away(napari_app_calls, qtbot):
    from napari_diffinfinite._widget import DiffInfiniteWidget
    from napari_diffinfinite.demo import DEMO_PANEL_NAME
    from napari_diffinfinite.widgets.canvas_controller import close_all_controllers

    viewers, runs = napari_app_calls
    try:
        assert cli.main(["demo"]) == 0
        (viewer,) = viewers
        assert runs == [True]
        # the rest comes in the event loop's first turns (napari.run's, here qtbot's)
        qtbot.waitUntil(lambda: DEMO_PANEL_NAME in viewer.window.dock_widgets, timeout=10000)
        # the demo canvas: tissue pyramid + the painted mask window, and the guided panel (tests/test_demo.py)
        assert [layer.name for layer in viewer.layers] == ["DiffInfinite tissue", "DiffInfinite mask"]
        panel = viewer.window.dock_widgets[DEMO_PANEL_NAME]
        panel.controls_button.native.click()
        widget = viewer.window.dock_widgets["DiffInfinite (napari-diffinfinite)"]
        assert isinstance(widget, DiffInfiniteWidget)
        assert widget.labels_layer.value is viewer.layers["DiffInfinite mask"]
    finally:
        close_all_controllers()

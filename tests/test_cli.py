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
    assert "not for diagnosis" in out


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


def test_demo_opens_demo_mode_with_the_widget_one_click_away(napari_app_calls):
    from napari_diffinfinite._widget import DiffInfiniteWidget
    from napari_diffinfinite.demo import DEMO_PANEL_NAME
    from napari_diffinfinite.widgets.canvas_controller import close_all_controllers

    viewers, runs = napari_app_calls
    try:
        assert cli.main(["demo"]) == 0
        (viewer,) = viewers
        assert runs == [True]
        # the demo canvas: tissue pyramid + the painted mask window, and the guided panel (tests/test_demo.py)
        assert [layer.name for layer in viewer.layers] == ["DiffInfinite tissue", "DiffInfinite mask"]
        panel = viewer.window.dock_widgets[DEMO_PANEL_NAME]
        panel.controls_button.native.click()
        widget = viewer.window.dock_widgets["DiffInfinite (napari-diffinfinite)"]
        assert isinstance(widget, DiffInfiniteWidget)
        assert widget.labels_layer.value is viewer.layers["DiffInfinite mask"]
    finally:
        close_all_controllers()

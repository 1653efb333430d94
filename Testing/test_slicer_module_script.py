"""SAMMed3D/SAMMed3D.py itself, headless: its Logic and its self-test (SAMMed3DTest) on an application-like scene.

Real Slicer provides ``qt``, ``slicer.ScriptedLoadableModule``, ``slicer.parameterNodeWrapper``, ``slicer.app``
and ``slicer.mrmlScene``; the slicer-core wheel does not. The ``slicer_module`` fixture supplies minimal
stand-ins for exactly those (test-only shims) and the real MRML classes for everything else.
"""

import importlib.util
import sys
import types
import unittest
from pathlib import Path
from types import SimpleNamespace

import pytest
import slicer
from slicer_scene import build_app_scene

MODULE_PY = Path(__file__).resolve().parents[1] / "SAMMed3D" / "SAMMed3D.py"


def _scripted_loadable_module_shim() -> types.ModuleType:
    shim = types.ModuleType("slicer.ScriptedLoadableModule")

    class ScriptedLoadableModule:
        def __init__(self, parent):
            self.parent = parent

    class ScriptedLoadableModuleWidget:
        def __init__(self, parent=None):
            self.parent = parent

    class ScriptedLoadableModuleLogic:
        def __init__(self, parent=None):
            pass

    class ScriptedLoadableModuleTest(unittest.TestCase):
        def delayDisplay(self, message, msec=0):  # noqa: N802 - Slicer's name
            pass

    for cls in (ScriptedLoadableModule, ScriptedLoadableModuleWidget, ScriptedLoadableModuleLogic,
                ScriptedLoadableModuleTest):  # fmt: skip
        setattr(shim, cls.__name__, cls)
    shim.__all__ = [name for name in vars(shim) if name.startswith("Scripted")]
    return shim


def _parameter_node_wrapper_shim() -> types.ModuleType:
    shim = types.ModuleType("slicer.parameterNodeWrapper")
    shim.parameterNodeWrapper = lambda cls: cls
    shim.Choice = lambda choices: None
    return shim


@pytest.fixture
def slicer_module(monkeypatch, tmp_path):
    """SAMMed3D.py imported against an application-like scene; yields (module, app scene)."""
    app = build_app_scene()
    monkeypatch.setitem(sys.modules, "qt", types.ModuleType("qt"))
    monkeypatch.setitem(sys.modules, "slicer.ScriptedLoadableModule", _scripted_loadable_module_shim())
    monkeypatch.setitem(sys.modules, "slicer.parameterNodeWrapper", _parameter_node_wrapper_shim())
    monkeypatch.setattr(slicer, "mrmlScene", app.scene, raising=False)
    fake_app = SimpleNamespace(cachePath=str(tmp_path / "cache"), applicationLogic=lambda: app.app_logic)
    monkeypatch.setattr(slicer, "app", fake_app, raising=False)
    spec = importlib.util.spec_from_file_location("SAMMed3D", MODULE_PY)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    yield module, app
    app.close()


def parameters(**values):
    defaults = dict(inputVolume=None, segmentation=None, segmentId="", positivePoints=None, negativePoints=None,
                    model="sam-med3d-turbo", device="auto", autoExtend=False, startFromExisting=False,
                    protectOthers=True, hardenTransform=False)  # fmt: skip
    return SimpleNamespace(**{**defaults, **values})


def test_module_metadata(slicer_module):
    module, _ = slicer_module
    parent = SimpleNamespace()
    module.SAMMed3D(parent)
    assert parent.title == "SAM-Med3D" and parent.categories == ["Segmentation"]
    assert "Ctrl+Z" in parent.helpText and "arXiv:2310.15161" in parent.acknowledgementText


def test_logic_creates_point_lists_segment_and_feeds_the_controller(slicer_module):
    module, app = slicer_module
    logic = module.SAMMed3DLogic()
    assert logic.controller.options.cache_dir.endswith("SAMMed3D")
    assert "sam-med3d-turbo" in [entry_id for entry_id, _, _ in logic.registryModels()]
    from SAMMed3DLib.slicer_scenario import sphere_volume

    volume = sphere_volume(app.scene)
    p = parameters()
    logic.ensureDefaults(p)
    assert p.inputVolume is volume
    assert p.positivePoints.GetDisplayNode().GetSelectedColor() != p.negativePoints.GetDisplayNode().GetSelectedColor()
    segment_id = logic.addSegment(p)
    assert p.segmentation.GetSegmentation().GetSegment(segment_id) is not None
    logic.applyParameters(p)
    assert logic.controller.inputs.volume is volume and logic.controller.inputs.segment_id == segment_id
    logic.controller.cleanup()


def test_self_test_phantom_scenario(slicer_module):
    module, _ = slicer_module
    module.SAMMed3DTest("test_phantom_scenario").test_phantom_scenario()


def test_self_test_real_network(slicer_module):
    module, _ = slicer_module
    module.SAMMed3DTest("test_real_network").test_real_network()

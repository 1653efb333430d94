"""SAMMed3D/SAMMed3D.py itself, headless: its Logic and its self-test (SAMMed3DTest) on an application-like scene.

Real Slicer provides ``qt``, ``slicer.ScriptedLoadableModule``, ``slicer.parameterNodeWrapper``, ``slicer.app``
and ``slicer.mrmlScene``; the slicer-core wheel does not. The ``slicer_module`` fixture supplies minimal
stand-ins for exactly those (test-only shims) and the real MRML classes for everything else.
"""

import importlib.util
import operator
import os
import subprocess
import sys
import types
import unittest
from pathlib import Path
from types import SimpleNamespace

import pytest
import slicer
from support.mainloop import under_main_loop  # noqa: F401 - the fixture, used by pytestmark
from support.slicer_scene import build_app_scene

pytestmark = pytest.mark.usefixtures("under_main_loop")  # the worker runs as under Slicer's main loop

ROOT = Path(__file__).resolve().parents[1]
MODULE_PY = ROOT / "SAMMed3D" / "SAMMed3D.py"


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


def load_module_script(app, cache_dir: Path, setitem=operator.setitem, setattr_=setattr) -> types.ModuleType:
    """SAMMed3D.py imported against ``app`` with the test-only shims. ``setitem``/``setattr_`` install them:
    pytest's monkeypatch in the test process, plain assignment in a throw-away subprocess."""
    setitem(sys.modules, "qt", types.ModuleType("qt"))
    setitem(sys.modules, "slicer.ScriptedLoadableModule", _scripted_loadable_module_shim())
    setitem(sys.modules, "slicer.parameterNodeWrapper", _parameter_node_wrapper_shim())
    setattr_(slicer, "mrmlScene", app.scene)
    setattr_(slicer, "app", SimpleNamespace(cachePath=str(cache_dir), applicationLogic=lambda: app.app_logic))
    spec = importlib.util.spec_from_file_location("SAMMed3D", MODULE_PY)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def slicer_module(monkeypatch, tmp_path):
    """SAMMed3D.py imported against an application-like scene; yields (module, app scene)."""
    app = build_app_scene()
    setattr_ = lambda obj, name, value: monkeypatch.setattr(obj, name, value, raising=False)  # noqa: E731
    yield load_module_script(app, tmp_path / "cache", monkeypatch.setitem, setattr_), app
    app.close()


def parameters(**values):
    defaults = dict(inputVolume=None, segmentation=None, segmentId="", positivePoints=None, negativePoints=None,
                    model="sam-med3d-turbo", device="auto", fastEncoder=False, autoExtend=False,
                    startFromExisting=False, protectOthers=True, hardenTransform=False)  # fmt: skip
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
    assert logic.options.cache_dir.endswith("SAMMed3D")
    assert "sam-med3d-turbo" in [entry_id for entry_id, _, _ in logic.registryModels()]
    from SAMMed3DLib.slicer.scenario import sphere_volume

    volume = sphere_volume(app.scene)
    p = parameters()
    logic.ensureDefaults(p)
    assert p.inputVolume is volume
    assert p.positivePoints.GetDisplayNode().GetSelectedColor() != p.negativePoints.GetDisplayNode().GetSelectedColor()
    segment_id = logic.addSegment(p)
    assert p.segmentation.GetSegmentation().GetSegment(segment_id) is not None
    logic.setParameterNode(p)
    assert logic.inputs.volume is volume and logic.inputs.segment_id == segment_id
    logic.cleanup()


def test_panel_defaults_are_headless_and_keep_what_is_set(app):
    from SAMMed3DLib.slicer import markups, mrml
    from SAMMed3DLib.slicer import panel as slicer_panel
    from SAMMed3DLib.slicer.scenario import sphere_volume

    volume = sphere_volume(app.scene)
    p = parameters()
    slicer_panel.ensure_defaults(app.scene, p)
    lists = (p.positivePoints, p.negativePoints)
    assert p.inputVolume is volume and [n.GetName() for n in lists] == ["SAM positive", "SAM negative"]
    for node, (_, colour) in zip(lists, markups.POINT_LISTS):
        assert node.GetDisplayNode().GetSelectedColor() == pytest.approx(colour)
        assert not node.GetDisplayNode().GetPointLabelsVisibility()
    slicer_panel.ensure_defaults(app.scene, p)  # a second call changes nothing
    assert (p.positivePoints, p.negativePoints) == lists
    first = slicer_panel.add_segment(app.scene, p)
    segmentation = p.segmentation
    second = slicer_panel.add_segment(app.scene, p)  # the same segmentation, one more segment
    assert p.segmentation is segmentation and p.segmentId == second != first
    assert segmentation.GetSegmentation().GetNumberOfSegments() == 2
    parameter = segmentation.GetSegmentation().GetConversionParameter(mrml._GEOMETRY_PARAMETER)
    assert mrml._same_geometry(parameter, mrml.volume_geometry(volume))


def test_a_declined_pytorch_install_removes_the_point_once(slicer_module):
    from SAMMed3DLib.slicer.controller import TORCH_NEEDED
    from SAMMed3DLib.slicer.scenario import SPHERE_CENTER_RAS, sphere_volume

    module, app = slicer_module
    logic = module.SAMMed3DLogic()
    volume = sphere_volume(app.scene)
    p = parameters()
    logic.ensureDefaults(p)
    logic.addSegment(p)
    logic.setParameterNode(p)
    logic.enter(app.scene)
    logic.wait()
    logic.dependencies_ready = lambda: False  # what the panel answers when the user says no to installing PyTorch
    p.positivePoints.AddControlPointWorld(*SPHERE_CENTER_RAS)  # a click in a view: the logic's observer runs
    assert p.positivePoints.GetNumberOfControlPoints() == 0
    assert logic.messages == [(TORCH_NEEDED, True)]
    logic.process_points()  # nothing new: no second message
    logic.dependencies_ready = lambda: True
    logic.process_points()  # and nothing left to replay
    assert not logic.busy and logic.messages == [(TORCH_NEEDED, True)]
    assert volume is p.inputVolume
    logic.cleanup()


SET_UP_WITHOUT_TORCH = """
import sys
sys.modules["torch"] = None  # as on first use: PyTorch is installed later, by the PyTorch extension
sys.modules["filelock"] = None  # and Slicer's Python may lack the cache's small packages too
import slicer, slicer.util
from support.slicer_scene import build_app_scene
from test_slicer_module_script import load_module_script, parameters

statuses, installed = [], []
slicer.util.showStatusMessage = lambda text, msec=0: statuses.append(text)
slicer.util.pip_install = lambda names: (installed.append(names), sys.modules.pop("filelock"))
app = build_app_scene()
module = load_module_script(app, sys.argv[1])
logic = module.SAMMed3DLogic()
assert logic.registryModels() == [] and statuses, statuses  # filelock missing: an empty list, not a crash
p = parameters()
logic.ensureDefaults(p)
logic.addSegment(p)
logic.setParameterNode(p)
logic.poll()
assert "PyTorch is not installed" in logic.device_note()
assert logic.ensurePackages() and installed == ["filelock"]
assert "sam-med3d-turbo" in [entry_id for entry_id, _, _ in logic.registryModels()]  # the refreshed list
assert sys.modules["torch"] is None and p.positivePoints is not None
logic.cleanup()
print("panel set up without torch")
"""


def test_the_panel_sets_up_before_pytorch_is_installed(tmp_path):
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "Testing"), os.environ.get("PYTHONPATH", "")]),
    }
    result = subprocess.run([sys.executable, "-c", SET_UP_WITHOUT_TORCH, str(tmp_path)], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "panel set up without torch" in result.stdout


def test_self_test_phantom_scenario(slicer_module):
    module, _ = slicer_module
    module.SAMMed3DTest("test_phantom_scenario").test_phantom_scenario()


def test_self_test_real_network(slicer_module):
    module, _ = slicer_module
    module.SAMMed3DTest("test_real_network").test_real_network()


def test_the_fast_encoder_option_reaches_the_loaded_network(slicer_module, tiny_checkpoint, monkeypatch):
    """The panel's "Faster image encoder" loads the network with bf16 matrix products where this machine has
    them, keeps it apart from the fp32 one, and is one clear error where the CPU lacks bf16 instructions."""
    import torch  # here, not at the top: another test imports this file where torch is absent

    from SAMMed3DLib import device as engine_device
    from SAMMed3DLib.errors import InputError
    from SAMMed3DLib.modeling.common import Linear
    from SAMMed3DLib.slicer.models import ModelStore, ModuleOptions

    module, _ = slicer_module
    logic = module.SAMMed3DLogic()
    logic.setParameterNode(parameters(fastEncoder=True))
    assert logic.options.precision == "bf16"
    logic.setParameterNode(parameters())
    assert logic.options.precision == "fp32"
    logic.cleanup()

    store = ModelStore()
    fast = ModuleOptions(model=str(tiny_checkpoint), device="cpu", precision="bf16")
    monkeypatch.setattr(engine_device, "cpu_has_bf16_products", lambda: True)
    network = store.job(fast)[0]()
    qkv = next(m for m in network.image_encoder.modules() if isinstance(m, Linear))
    assert qkv.weight.dtype == torch.bfloat16 and network.image_encoder.pos_embed.dtype == torch.float32
    exact = store.job(ModuleOptions(model=str(tiny_checkpoint), device="cpu"))[0]()
    assert exact is not network and next(exact.image_encoder.parameters()).dtype == torch.float32
    monkeypatch.setattr(engine_device, "cpu_has_bf16_products", lambda: False)
    with pytest.raises(InputError, match="AVX512-BF16 or AMX"):
        ModelStore().job(fast)[0]()

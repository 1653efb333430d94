"""The model is loaded before the first click: on volume selection the module's worker imports torch and loads the
network in the background, a click made during that load waits for it (one load), a new model, device or
precision releases the old network, Unload model frees it, and a preload that cannot load is quiet.

Every worker here runs under the stand-in main loop that holds the GIL as Slicer's does (``under_main_loop``);
the networks are the tiny random-weight checkpoints, counted by the loader the controller is given.
"""

import gc
import shutil
import subprocess
import sys
import threading
import weakref
from pathlib import Path
from types import SimpleNamespace
from typing import Any, List

import pytest
from support.mainloop import under_main_loop  # noqa: F401 - the fixture, used by pytestmark

from SAMMed3DLib import load_model
from SAMMed3DLib.slicer import models as slicer_models
from SAMMed3DLib.slicer.controller import Inputs, SegmentationController
from SAMMed3DLib.slicer.feedback import LOADING_MODEL, MODEL_UNLOADED
from SAMMed3DLib.slicer.scenario import SPHERE_CENTER_RAS, point_lists, segmentation_with_neighbour, sphere_volume

pytestmark = pytest.mark.usefixtures("under_main_loop")

ROOT = Path(__file__).resolve().parents[1]


class CountingLoader:
    """``load_model`` that counts its calls and keeps a weak reference to each network it built; with ``gate``
    set, each load waits for it (a load still under way when the test acts)."""

    def __init__(self) -> None:
        self.calls = 0
        self.built: List[Any] = []  # weak references, oldest first
        self.started = threading.Event()
        self.gate = threading.Event()
        self.gate.set()

    def __call__(self, path, device, precision):
        self.calls += 1
        self.started.set()
        assert self.gate.wait(60), "the test never let the load finish"
        model = load_model(path, device=device, precision=precision)
        self.built.append(weakref.ref(model))
        return model


@pytest.fixture
def module(app, tiny_checkpoint, tmp_path):
    """The phantom scene and a controller whose local model is the tiny checkpoint on the CPU, entered but with
    no volume selected yet (as when the module opens on an empty selection)."""
    volume = sphere_volume(app.scene)
    segmentation, target, _ = segmentation_with_neighbour(app.scene, volume)
    positive, negative = point_lists(app.scene)
    loader = CountingLoader()
    controller = SegmentationController(model_loader=loader)
    controller.set_options(device="cpu", model=str(tiny_checkpoint), cache_dir=str(tmp_path / "cache"))
    controller.enter(app.scene)
    inputs = Inputs(volume, segmentation, target, positive, negative)
    yield SimpleNamespace(controller=controller, loader=loader, inputs=inputs, positive=positive)
    controller.cleanup()


def select(module) -> None:
    module.controller.set_inputs(module.inputs)


def click(module) -> None:
    module.positive.AddControlPointWorld(*SPHERE_CENTER_RAS)
    module.controller.wait()
    assert module.controller.last_error is None, module.controller.last_error
    assert module.controller.last_step is not None and module.controller.last_step.encoded


@pytest.fixture
def warm_ups(monkeypatch):
    """The networks the warm-up ran (the network runs once on a blank crop after its load, unless a click waits)."""
    from SAMMed3DLib import model as engine_model

    runs: List[Any] = []
    monkeypatch.setattr(engine_model, "warm_up", lambda network: runs.append(network))
    return runs


def test_selecting_a_volume_starts_loading_the_model(module, warm_ups):
    controller, loader = module.controller, module.loader
    assert loader.calls == 0 and not controller.busy  # no volume yet: nothing to load for
    select(module)
    assert controller.busy and controller.status == LOADING_MODEL
    controller.wait()
    assert loader.calls == 1 and controller.model_loaded and warm_ups == [loader.built[0]()]
    assert controller.status.startswith("model ready · CPU · loaded in "), controller.status
    assert controller.messages == []  # the status line only: nothing to dismiss
    controller.enter(controller.inputs.volume.GetScene())  # entering again loads nothing more
    select(module)
    controller.wait()
    assert loader.calls == 1


def test_a_click_during_the_load_waits_for_it_and_the_model_loads_once(module, warm_ups):
    controller, loader = module.controller, module.loader
    loader.gate.clear()
    select(module)
    assert loader.started.wait(60), "selecting a volume did not start loading the model"
    module.positive.AddControlPointWorld(*SPHERE_CENTER_RAS)  # the user clicks while the load runs
    assert controller.busy and controller.last_step is None
    loader.gate.set()
    controller.wait()
    assert controller.last_error is None, controller.last_error
    assert controller.last_step is not None and controller.last_step.encoded
    assert loader.calls == 1, "the click loaded the model a second time"
    assert warm_ups == [], "the click waited for a warm-up run too"


@pytest.fixture
def no_gc():
    """Only reference counting frees objects meanwhile: a network kept alive by a reference cycle stays."""
    gc.collect()
    gc.disable()
    yield
    gc.enable()


@pytest.mark.parametrize("change", ["model", "device", "precision"])
def test_a_new_model_device_or_precision_releases_the_old_model(module, change, tmp_path, monkeypatch, no_gc):
    from SAMMed3DLib import device as engine_device

    monkeypatch.setattr(engine_device, "cpu_has_bf16_products", lambda: True)  # bf16 on any CPU, for the test
    controller, loader = module.controller, module.loader
    select(module)
    click(module)  # a session and an embedding cache hold the network too
    old = loader.built[0]
    other = shutil.copy(controller.options.model, tmp_path / "other.pth")
    changes = {"model": str(other), "device": "auto", "precision": "bf16"}
    controller.set_options(**{change: changes[change]})
    assert old() is None, "the old network is still held after the switch"
    controller.wait()
    assert loader.calls == 2 and controller.model_loaded and loader.built[1]() is not None
    click(module)
    assert loader.calls == 2


def test_unload_model_frees_it_until_the_next_click(module, no_gc):
    controller, loader = module.controller, module.loader
    select(module)
    click(module)
    controller.set_inputs(Inputs())  # the scene closes: the model stays for the next case
    assert controller.model_loaded
    select(module)
    old = loader.built[0]
    controller.unload_model()
    assert old() is None, "Unload model left the network in memory"
    assert not controller.model_loaded and controller.status == MODEL_UNLOADED
    controller.set_inputs(Inputs())
    select(module)  # unloaded on purpose: selecting a volume does not load it again
    controller.wait()
    assert loader.calls == 1
    click(module)  # the next click loads it, and continues from the segment as it is
    assert loader.calls == 2 and controller.model_loaded


def test_releasing_a_cuda_model_hands_its_memory_back(module, monkeypatch):
    import torch

    emptied = []
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: emptied.append(True))
    controller = module.controller
    controller.set_model("on the GPU", object(), device_type="cuda")
    controller.set_options(precision="bf16")
    controller.wait()
    assert emptied == [True]


def test_weights_not_downloaded_leave_a_reason_and_no_message(module):
    controller, loader = module.controller, module.loader
    asked = []
    controller.dependencies_ready = lambda: asked.append(True) or True
    controller.set_options(model="sam-med3d-turbo")  # a registry model, not in the (empty) cache
    select(module)
    assert not controller.busy and loader.calls == 0
    assert controller.status.startswith("model not loaded: The model") and "press Download" in controller.status
    assert controller.messages == [] and asked == []
    module.positive.AddControlPointWorld(*SPHERE_CENTER_RAS)  # the click says it, as it always did
    controller.wait()
    assert "not downloaded yet: press Download first" in controller.last_error and asked == [True]


def test_a_damaged_local_file_fails_quietly_and_the_click_reports_it(module, tmp_path):
    controller, loader = module.controller, module.loader
    damaged = tmp_path / "damaged.pth"
    damaged.write_bytes(b"not a checkpoint")
    controller.set_options(model=str(damaged))
    select(module)
    controller.wait()
    assert loader.calls == 1 and not controller.model_loaded
    assert controller.status.startswith("model not loaded: ") and controller.messages == []
    select(module)  # a failed preload is not tried again on every selection
    assert not controller.busy and loader.calls == 1
    module.positive.AddControlPointWorld(*SPHERE_CENTER_RAS)
    controller.wait()
    assert loader.calls == 2 and controller.last_error and controller.messages[-1] == (controller.last_error, True)


def test_without_pytorch_the_preload_asks_nothing(module, monkeypatch):
    controller, loader = module.controller, module.loader
    monkeypatch.setattr(slicer_models, "torch_installed", lambda: False)
    asked = []
    controller.dependencies_ready = lambda: asked.append(True) or False
    select(module)
    assert not controller.busy and loader.calls == 0 and asked == [] and controller.messages == []
    assert controller.status == f"model not loaded: {slicer_models.NO_TORCH_YET}"


DEVICE_NOTE_WITHOUT_IMPORTING_TORCH = """
import sys
from SAMMed3DLib.slicer.models import ModelStore, ModuleOptions
store = ModelStore()
assert store.note(ModuleOptions(device="auto")) == "", store.note(ModuleOptions(device="auto"))
assert "torch" not in sys.modules, "the panel's device note imported torch on the main thread"
import torch
assert store.note(ModuleOptions(device="cpu")) == "running on the CPU (much slower than a GPU)"
print("ok")
"""


def test_the_device_note_never_makes_the_panel_import_torch():
    """The worker imports torch when it loads the model; the panel's note waits for that instead of importing it
    on the main thread (a GUI frozen for the import)."""
    result = subprocess.run([sys.executable, "-c", DEVICE_NOTE_WITHOUT_IMPORTING_TORCH], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]


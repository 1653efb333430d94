"""SAMMed3D.py's Widget and self-test where Qt matters, headless.

There is no Qt here: ``qt`` is replaced by a few recording stand-ins that model exactly the Qt behaviour the
defects are about (a shortcut's parent and context, deletion; a segment selector that announces its first segment
when it is given a new segmentation unless its signals are blocked). The Logic behind the Widget is the real one
on a real MRML scene (test_slicer_module_script.py loads the module against it).
"""

import os
import subprocess
import sys
from types import SimpleNamespace

import pytest
from support.slicer_scene import build_app_scene
from test_slicer_module_script import ROOT, load_module_script, parameters


class Shortcut:
    """qt.QShortcut as far as the module uses it."""

    def __init__(self, keys, parent):
        self.keys, self.parent, self.context, self.enabled, self.deleted = keys, parent, "WindowShortcut", True, False

    def setContext(self, context):  # noqa: N802 - Qt's names
        self.context = context

    def setEnabled(self, on):  # noqa: N802
        self.enabled = on

    def setParent(self, parent):  # noqa: N802
        self.parent = parent

    def deleteLater(self):  # noqa: N802
        self.deleted = True

    def connect(self, signal, slot):
        self.slot = slot


class SegmentSelector:
    """qMRMLSegmentSelectorWidget: a new segmentation selects its first segment and announces it (Slicer's
    ``currentSegmentChanged``) unless signals are blocked."""

    def __init__(self, on_segment):
        self.on_segment, self.blocked, self.node, self.segment = on_segment, False, None, ""

    def blockSignals(self, on):  # noqa: N802
        was, self.blocked = self.blocked, on
        return was

    def setCurrentNode(self, node):  # noqa: N802
        if node is not self.node:
            self.node = node
            ids = node.GetSegmentation().GetSegmentIDs() if node is not None else []
            self.segment = ids[0] if ids else ""
            if not self.blocked:
                self.on_segment(self.segment)

    def setCurrentSegmentID(self, segment_id):  # noqa: N802
        self.segment = segment_id
        if not self.blocked:
            self.on_segment(segment_id)


class Anything:
    """Any other widget: every method call is accepted, attributes are kept."""

    count = 0

    def __getattr__(self, name):
        return lambda *args, **kwargs: -1 if name == "findData" else False


@pytest.fixture
def module(monkeypatch, tmp_path):
    app = build_app_scene()
    setattr_ = lambda obj, name, value: monkeypatch.setattr(obj, name, value, raising=False)  # noqa: E731
    module = load_module_script(app, tmp_path / "cache", monkeypatch.setitem, setattr_)
    qt = sys.modules["qt"]
    qt.QShortcut, qt.QKeySequence = Shortcut, str
    qt.Qt = SimpleNamespace(WidgetWithChildrenShortcut="WidgetWithChildrenShortcut")
    yield module, app
    app.close()


def _widget(module, window="main window"):
    """The Widget with the real Logic, its panel ``"panel"`` and Slicer's main window ``window``."""
    import slicer.util

    slicer.util.mainWindow = lambda: window
    widget = module.SAMMed3DWidget.__new__(module.SAMMed3DWidget)
    module.SAMMed3DWidget.__init__(widget, "panel")
    widget.logic = module.SAMMed3DLogic()
    widget.timer = SimpleNamespace(stop=lambda: None, start=lambda: None)
    widget.casesTimer = SimpleNamespace(stop=lambda: None, start=lambda: None)
    widget.cases = SimpleNamespace(closed=0)
    widget.cases.close = lambda: setattr(widget.cases, "closed", widget.cases.closed + 1)
    return widget


def test_enter_finishes_only_from_the_module_panel(module):
    """Defect 7: Return/Enter belong to the panel (with its children), not to every line edit of the window."""
    module, _ = module
    widget = _widget(module)
    widget._makeShortcuts()
    by_key = {shortcut.keys: shortcut for shortcut in widget._shortcuts}
    for key in ("Return", "Enter"):
        assert by_key[key].parent == "panel" and by_key[key].context == "WidgetWithChildrenShortcut"
    assert by_key["Ctrl+Z"].parent == "main window"  # clicks are made in the views: undo works there
    assert not any(shortcut.enabled for shortcut in widget._shortcuts)  # until the module is entered
    widget.logic.cleanup()


def test_cleanup_deletes_the_shortcuts(module):
    """Defect 6: a reloaded module must not leave a second enabled shortcut per key (Qt then fires neither);
    without a main window the shortcuts still have a parent."""
    module, _ = module
    widget = _widget(module, window=None)
    widget._makeShortcuts()
    made = list(widget._shortcuts)
    assert all(shortcut.parent == "panel" for shortcut in made)
    for shortcut in made:
        shortcut.setEnabled(True)
    widget.cleanup()
    assert widget._shortcuts == [] and all(s.deleted and not s.enabled and s.parent is None for s in made)
    assert widget.cases.closed == 1  # an open case's lock is given back


def test_a_new_segmentation_keeps_the_saved_segment(module):
    """Defect 9: showing the parameter node's segmentation must not overwrite its segment with the first one."""
    module, app = module
    from SAMMed3DLib.slicer.scenario import sphere_volume

    widget = _widget(module)
    sphere_volume(app.scene)
    p = parameters()
    widget.logic.ensureDefaults(p)
    widget.logic.addSegment(p)
    second = widget.logic.addSegment(p)  # the saved choice is the second segment
    widget._parameterNode = p
    widget.ui = SimpleNamespace(segmentSelector=SegmentSelector(widget._onSegmentChanged))
    for name in ("deviceSelector", "modelSelector", "positiveButton", "negativeButton", "undoButton", "redoButton",
                 "resetButton", "finishButton", "deviceWarningLabel", "statusLabel", "serverBox",
                 "unloadModelButton"):  # fmt: skip
        setattr(widget.ui, name, Anything())
    widget._onParameterNodeModified()
    assert p.segmentId == second and widget.ui.segmentSelector.segment == second
    widget.logic.cleanup()


def test_unload_model_is_a_panel_button_enabled_while_a_model_is_loaded(module):
    module, _ = module
    ui_file = ROOT / "SAMMed3D" / "Resources" / "UI" / "SAMMed3D.ui"
    assert 'name="unloadModelButton"' in ui_file.read_text(encoding="utf-8")
    widget = _widget(module)
    names = ("deviceSelector", "positiveButton", "negativeButton", "undoButton", "redoButton", "resetButton",
             "finishButton", "deviceWarningLabel", "statusLabel", "serverBox", "unloadModelButton")  # fmt: skip
    widget.ui = SimpleNamespace(**{name: Anything() for name in names})
    states = []
    for change in (lambda: None, lambda: widget.logic.set_model("loaded", object()), widget.logic.unload_model):
        change()
        widget._updateState()
        states.append(widget.ui.unloadModelButton.enabled)
    assert states == [False, True, False]
    assert widget.ui.statusLabel.text == "model unloaded"
    widget.logic.cleanup()


SELF_TEST_WITHOUT_TORCH = """
import sys, unittest
sys.modules["torch"] = None  # the extension factory's test run: PyTorch is not installed
import slicer
from support.slicer_scene import build_app_scene
from test_slicer_module_script import load_module_script

app = build_app_scene()
module = load_module_script(app, sys.argv[1])
slicer.app.testingEnabled = lambda: True
result = unittest.TextTestRunner(stream=sys.stdout, verbosity=2).run(unittest.defaultTestLoader.loadTestsFromTestCase(
    module.SAMMed3DTest))
print("skipped", len(result.skipped), "errors", len(result.errors), "failures", len(result.failures))
"""


def test_the_self_test_without_pytorch_skips_instead_of_failing(tmp_path):
    """Defect 4: without torch (and without the PyTorch extension to install it) the self-test skips."""
    paths = [str(ROOT), str(ROOT / "Testing"), os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
    result = subprocess.run([sys.executable, "-c", SELF_TEST_WITHOUT_TORCH, str(tmp_path)], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    assert "skipped 2 errors 0 failures 0" in result.stdout, result.stdout[-2000:] + result.stderr[-2000:]

"""SAM-Med3D: interactive 3-D segmentation in 3D Slicer.

Shape of the Slicer scripted-module template: Module, parameter node, thin Widget (Qt wiring only, talks to
``self.logic`` only), Logic (IS the controller: ``ScriptedLoadableModuleLogic`` with the Qt-free
``SAMMed3DLib.slicer.controller.SegmentationController`` mixed in), Test (runs SAMMed3DLib.slicer.scenario, the
same code as pytest).
"""

import importlib.util
import os
import sys
import tempfile
from pathlib import Path
from typing import Annotated, Optional

import qt
import slicer
import vtk
from slicer import vtkMRMLMarkupsFiducialNode, vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode
from slicer.parameterNodeWrapper import Choice, parameterNodeWrapper
from slicer.ScriptedLoadableModule import *
from slicer.util import VTKObservationMixin


def _make_engine_importable() -> None:
    """Installed, SAMMed3DLib sits beside this file; in a source checkout (Extension Wizard / additional module
    path pointing at SAMMed3D/) it is one folder up."""
    try:
        import SAMMed3DLib  # noqa: F401
    except ImportError:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


_make_engine_importable()

from SAMMed3DLib.slicer import gui as slicer_gui  # noqa: E402
from SAMMed3DLib.slicer import panel as slicer_panel  # noqa: E402
from SAMMed3DLib.slicer.cases_section import HEARTBEAT_S, CasesSection  # noqa: E402
from SAMMed3DLib.slicer.controller import (  # noqa: E402
    DEFAULT_MODEL,
    DEVICE_CHOICES,
    POLL_INTERVAL_S,
    POLL_WAIT_S,
    Inputs,
    SegmentationController,
)

PROGRESS_DELAY_S = 0.4  # a busy indicator appears only for work that takes longer than this
LOCAL_CHECKPOINT = "__local__"
SERVER_SETTINGS = ("SAMMed3D/serverUrl", "SAMMed3D/serverToken")  # qt.QSettings keys: per user, not in scenes
SHORTCUTS = (("A", "placePositive"), ("S", "placeNegative"), ("Ctrl+Z", "undo"), ("Ctrl+Y", "redo"),
             ("Ctrl+Shift+Z", "redo"), ("Return", "finish"), ("Enter", "finish"))  # fmt: skip
PANEL_KEYS = ("Return", "Enter")
"""Keys that act only while the focus is in the module panel: in any other line edit of the main window they
must keep their meaning. The others work in the whole main window (clicks are made in the views)."""
HELP = """Interactive 3-D segmentation with SAM-Med3D.
<ol><li>Select the input volume and a segment (<b>New segment</b> adds one).</li>
<li>Pick a model; press <b>Download</b> once (SAM-Med3D-turbo is recommended). Or choose the device
<b>Server</b>, enter a team server's URL and token and press <b>Test connection</b>: no PyTorch needed.</li>
<li>Press <b>+ point</b> and click on the structure in any slice or 3-D view: the segment appears.
Add more positive (green) or <b>&minus; point</b> negative (red) clicks to refine it.</li>
<li><b>Finish</b> keeps the result. Other segments are never modified.</li></ol>
<b>Cases</b>: choose a data folder of images; <b>Next</b> opens a case nobody else has open, <b>Save</b> and
<b>Save &amp; next</b> write NAME.seg.nrrd and NAME.prompts.mrk.json beside the image.
Keyboard shortcuts while the module is shown: <b>A</b> positive points, <b>S</b> negative points,
<b>Ctrl+Z</b> undo, <b>Ctrl+Y</b> / <b>Ctrl+Shift+Z</b> redo, <b>Enter</b> finish.
The command line (<code>python -m SAMMed3DLib segment</code>) runs the same engine without Slicer."""
ACKNOWLEDGEMENT = """Uses the SAM-Med3D network: Wang H., Guo S., Ye J., et al.,
"SAM-Med3D: A Vision Foundation Model for General-Purpose Segmentation on Volumetric Medical Images",
arXiv:2310.15161, ECCV BIC 2024 (oral). Weights by the SAM-Med3D authors (Apache-2.0)."""


class SAMMed3D(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "SAM-Med3D"
        self.parent.categories = ["Segmentation"]
        self.parent.dependencies = []
        self.parent.contributors = ["SAM-Med3D for 3D Slicer contributors"]
        self.parent.helpText = HELP
        self.parent.acknowledgementText = ACKNOWLEDGEMENT


@parameterNodeWrapper
class SAMMed3DParameterNode:
    """Panel state saved with the scene. Points are RAS (world) control points of the two lists."""

    inputVolume: vtkMRMLScalarVolumeNode
    segmentation: vtkMRMLSegmentationNode
    segmentId: str = ""
    positivePoints: vtkMRMLMarkupsFiducialNode
    negativePoints: vtkMRMLMarkupsFiducialNode
    model: str = DEFAULT_MODEL  # registry id or checkpoint path
    device: Annotated[str, Choice(list(DEVICE_CHOICES))] = "auto"
    fastEncoder: bool = False  # bf16 matrix products in the image encoder
    autoExtend: bool = False
    startFromExisting: bool = False
    protectOthers: bool = True
    hardenTransform: bool = False


class SAMMed3DWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """Wires the panel to the logic; polls the worker from a timer so the GUI never waits on inference."""

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic: Optional[SAMMed3DLogic] = None
        self._parameterNode: Optional[SAMMed3DParameterNode] = None
        self._parameterNodeGuiTag = None
        self._shortcuts = []
        self._progressDialog = None
        self._shownStatus = ""

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/SAMMed3D.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = SAMMed3DLogic()
        self.timer = qt.QTimer()
        self.timer.setInterval(int(1000 * POLL_INTERVAL_S))
        self.timer.connect("timeout()", self._poll)
        slicer_gui.connect(self.logic, self)  # the four calls the logic makes to its GUI (SAMMed3DLib/slicer/gui.py)
        self.ui.progressBar.setVisible(False)
        self.ui.deviceWarningLabel.setVisible(False)
        self._fillModels()
        for value, label in DEVICE_CHOICES.items():
            self.ui.deviceSelector.addItem(label, value)
        self.ui.segmentSelector.connect("currentSegmentChanged(QString)", self._onSegmentChanged)
        self.ui.segmentSelector.connect("currentNodeChanged(vtkMRMLNode*)", self._onSegmentationChanged)
        self.ui.modelSelector.connect("activated(int)", self._onModelChosen)
        self.ui.deviceSelector.connect("currentIndexChanged(int)", self._onDeviceChosen)
        self.ui.addSegmentButton.connect("clicked()", lambda: self.logic.addSegment(self._parameterNode))
        self.ui.downloadButton.connect("clicked()", self._onDownload)
        self.ui.unloadModelButton.connect("clicked()", lambda: self._run(self.logic.unload_model))
        self._loadServerSettings()
        self.ui.testConnectionButton.connect("clicked()", self.logic.test_connection)  # edits end on focus-out
        self.ui.positiveButton.connect("toggled(bool)", lambda on: self._placePoints(True, on))
        self.ui.negativeButton.connect("toggled(bool)", lambda on: self._placePoints(False, on))
        for name in ("undo", "redo", "reset", "finish"):
            getattr(self.ui, f"{name}Button").connect("clicked()", getattr(self, name))
        self._makeShortcuts()
        self.cases = CasesSection(self.ui, slicer.mrmlScene, self.logic, lambda: self._parameterNode,
                                  slicer.util.confirmYesNoDisplay, self.show_message)  # fmt: skip
        self.casesTimer = qt.QTimer()
        self.casesTimer.setInterval(int(1000 * HEARTBEAT_S))
        self.casesTimer.connect("timeout()", self.cases.heartbeat)
        self.casesTimer.start()
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.initializeParameterNode()

    def _makeShortcuts(self) -> None:
        """Disabled until the module is entered. Enter/Return belong to the panel (see PANEL_KEYS); the others to
        the main window, or to the panel when there is none (``--no-main-window``)."""
        window = slicer.util.mainWindow()
        for keys, slot in SHORTCUTS:
            panelOnly = keys in PANEL_KEYS or window is None
            shortcut = qt.QShortcut(qt.QKeySequence(keys), self.parent if panelOnly else window)
            if keys in PANEL_KEYS:
                shortcut.setContext(qt.Qt.WidgetWithChildrenShortcut)
            shortcut.setEnabled(False)
            shortcut.connect("activated()", getattr(self, slot))
            self._shortcuts.append(shortcut)

    def cleanup(self) -> None:
        """Module reload or application exit: nothing of this widget may outlive it (a reloaded module makes new
        shortcuts; two enabled shortcuts for one key make Qt fire neither)."""
        self.removeObservers()
        self.timer.stop()
        self.casesTimer.stop()
        self.cases.close()
        for shortcut in self._shortcuts:
            shortcut.setEnabled(False)
            shortcut.setParent(None)
            shortcut.deleteLater()
        self._shortcuts = []
        self.logic.cleanup()

    def enter(self) -> None:
        self.initializeParameterNode()
        self.logic.enter(slicer.mrmlScene)
        for shortcut in self._shortcuts:
            shortcut.setEnabled(True)
        self.place_mode_changed()

    def exit(self) -> None:
        for shortcut in self._shortcuts:
            shortcut.setEnabled(False)
        self.logic.exit()
        self.place_mode_changed()
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._onParameterNodeModified)

    def onSceneStartClose(self, caller, event) -> None:
        self.cases.close()
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        parameterNode = self.logic.getParameterNode()
        self.logic.ensureDefaults(parameterNode)
        self.setParameterNode(parameterNode)

    def setParameterNode(self, parameterNode: Optional[SAMMed3DParameterNode]) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._onParameterNodeModified)
        self._parameterNode = parameterNode
        self.logic.setParameterNode(parameterNode)  # the one call through which options reach the logic
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._onParameterNodeModified)
            self._onParameterNodeModified()

    def _onParameterNodeModified(self, caller=None, event=None) -> None:
        """GUI only (the logic follows the parameter node itself)."""
        p = self._parameterNode
        slicer_panel.show_segment(self.ui.segmentSelector, p.segmentation, p.segmentId)
        self.ui.deviceSelector.setCurrentIndex(max(self.ui.deviceSelector.findData(p.device), 0))
        index = self.ui.modelSelector.findData(p.model)
        self.ui.modelSelector.setCurrentIndex(index if index >= 0 else self.ui.modelSelector.count - 1)
        self._updateState()

    # --- panel actions --------------------------------------------------------------------------------------

    def _fillModels(self) -> None:
        self.ui.modelSelector.clear()
        for entry_id, name, description in self.logic.registryModels():
            self.ui.modelSelector.addItem(name, entry_id)
            self.ui.modelSelector.setItemData(self.ui.modelSelector.count - 1, description, qt.Qt.ToolTipRole)
        self.ui.modelSelector.addItem("Local checkpoint\u2026", LOCAL_CHECKPOINT)

    def _onModelChosen(self, index: int) -> None:
        value = self.ui.modelSelector.itemData(index)
        if value == LOCAL_CHECKPOINT:
            value = qt.QFileDialog.getOpenFileName(self.parent, "SAM-Med3D checkpoint", "", "Checkpoints (*.pth *.pt)")
            if not value:
                return
            self.ui.modelSelector.setItemText(index, f"Local: {os.path.basename(value)}")
        self._parameterNode.model = value

    def _onDeviceChosen(self, index: int) -> None:
        device = self.ui.deviceSelector.itemData(index)
        if self._parameterNode and device and self._parameterNode.device != device:
            self._parameterNode.device = device

    def _loadServerSettings(self) -> None:
        for lineEdit, key in zip((self.ui.serverUrlLineEdit, self.ui.serverTokenLineEdit), SERVER_SETTINGS):
            lineEdit.text = str(qt.QSettings().value(key, "") or "")
            lineEdit.connect("editingFinished()", self._onServerChanged)
        self._onServerChanged()

    def _onServerChanged(self) -> None:
        """The server's URL and token: into Slicer's settings (never the scene) and to the logic."""
        url, token = self.ui.serverUrlLineEdit.text.strip(), self.ui.serverTokenLineEdit.text.strip()
        for key, value in zip(SERVER_SETTINGS, (url, token)):
            qt.QSettings().setValue(key, value)
        self.logic.set_options(server_url=url, server_token=token)

    def _onSegmentationChanged(self, node) -> None:
        if self._parameterNode and self._parameterNode.segmentation != node:
            self._parameterNode.segmentation = node

    def _onSegmentChanged(self, segmentId: str) -> None:
        if self._parameterNode and self._parameterNode.segmentId != segmentId:
            self._parameterNode.segmentId = segmentId or ""

    def dependencies_ready(self) -> bool:
        """The small pip packages (then the model list can be read: refresh it) and PyTorch (asks first)."""
        if self.logic.ensurePackages():
            self._fillModels()
            if self._parameterNode:
                self._onParameterNodeModified()
        return self.logic.torchReady()

    def _onDownload(self) -> None:
        if not self.dependencies_ready():
            return
        progress = self.logic.download()
        dialog = qt.QProgressDialog("Downloading the model\u2026", "Cancel", 0, 100, slicer.util.mainWindow())
        dialog.setWindowTitle("SAM-Med3D")
        dialog.setMinimumDuration(0)
        dialog.connect("canceled()", progress.cancel)
        self._progressDialog = dialog

    def _placePoints(self, positive: bool, on: bool) -> None:
        """A button toggled by the user: place mode into its list, or out of place mode."""
        if on:
            self.logic.start_placing(positive)
        elif self.logic.placing == positive:
            self.logic.stop_placing()
        self.place_mode_changed()

    def work_queued(self) -> None:
        self.timer.start()

    def place_mode_changed(self) -> None:
        """The +/− buttons show Slicer's place mode (a right-click in a view ends it), not their last click."""
        placing = self.logic.placing
        for button, positive in ((self.ui.positiveButton, True), (self.ui.negativeButton, False)):
            wasBlocked = button.blockSignals(True)
            button.checked = placing is positive
            button.blockSignals(wasBlocked)

    def placePositive(self) -> None:
        self.ui.positiveButton.checked = not self.ui.positiveButton.checked

    def placeNegative(self) -> None:
        self.ui.negativeButton.checked = not self.ui.negativeButton.checked

    def undo(self) -> None:
        self._run(self.logic.undo)

    def redo(self) -> None:
        self._run(self.logic.redo)

    def reset(self) -> None:
        self._run(self.logic.reset)

    def finish(self) -> None:
        self.logic.stop_placing()
        self._run(self.logic.finish)

    def _run(self, action) -> None:
        action()
        self._updateState()

    # --- feedback -------------------------------------------------------------------------------------------

    def _poll(self) -> None:
        busy = self.logic.poll(POLL_WAIT_S)
        self.ui.progressBar.setVisible(busy and self.logic.running_for() > PROGRESS_DELAY_S)
        progress = self.logic.download_progress
        if self._progressDialog is not None:
            if progress is None:
                self._progressDialog.close()
                self._progressDialog = None
            elif progress.fraction is not None:
                self._progressDialog.setValue(int(100 * progress.fraction))
        if not busy:
            self.timer.stop()
        self._updateState()

    def _updateState(self) -> None:
        logic = self.logic
        ready = self._parameterNode is not None and self._parameterNode.inputVolume is not None
        self.ui.positiveButton.enabled = self.ui.negativeButton.enabled = ready
        self.ui.undoButton.enabled = self.ui.resetButton.enabled = self.ui.finishButton.enabled = logic.can_undo
        self.ui.redoButton.enabled, self.ui.unloadModelButton.enabled = logic.can_redo, logic.model_loaded
        note = logic.device_note()
        self.ui.serverBox.setVisible(logic.uses_server)
        self.ui.deviceWarningLabel.setVisible("CPU" in note or logic.uses_server)
        self.ui.deviceWarningLabel.text = note
        if logic.status and logic.status != self._shownStatus:  # a newer message stays until then
            self._shownStatus = logic.status
            self.ui.statusLabel.setStyleSheet("")
            self.ui.statusLabel.text = logic.status

    def show_message(self, text: str, isError: bool) -> None:
        self._shownStatus = self.logic.status
        self.ui.statusLabel.setStyleSheet("color: #d03030;" if isError else "color: #c07000;")
        self.ui.statusLabel.text = text
        slicer.util.showStatusMessage(f"SAM-Med3D: {text}", 5000)


class SAMMed3DLogic(ScriptedLoadableModuleLogic, SegmentationController):
    """The module's logic IS the controller (SegmentationController, Qt-free); this class adds what needs Slicer's
    application: the parameter node, the cache folder, pip and PyTorch installs."""

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        SegmentationController.__init__(self)
        # Checkpoints live in Slicer's cache folder (Application Settings → Cache), not the CLI's default one.
        self.set_options(cache_dir=os.path.join(slicer.app.cachePath, "SAMMed3D"))
        self._parameters: Optional[SAMMed3DParameterNode] = None
        self._parameterObservation = None

    def getParameterNode(self) -> SAMMed3DParameterNode:
        return SAMMed3DParameterNode(super().getParameterNode())

    def setParameterNode(self, p: Optional[SAMMed3DParameterNode]) -> None:
        """Follow ``p`` from now on: its options and selection reach the segmentation work whenever it changes."""
        if self._parameterObservation is not None:
            node, tag = self._parameterObservation
            node.RemoveObserver(tag)
            self._parameterObservation = None
        self._parameters = p
        if hasattr(p, "AddObserver"):  # the wrapper forwards observers to its MRML node, as the template uses it
            tag = p.AddObserver(vtk.vtkCommand.ModifiedEvent, lambda caller, event: self.useParameters())
            self._parameterObservation = (p, tag)
        self.useParameters()

    def useParameters(self) -> None:
        """Options and selection from the parameter node (none: nothing selected, e.g. while the scene closes)."""
        p = self._parameters
        if p is None:
            self.set_inputs(Inputs())
            return
        self.set_options(model=p.model, device=p.device, precision="bf16" if p.fastEncoder else "fp32",
                         auto_extend=p.autoExtend, start_from_existing=p.startFromExisting,
                         protect_others=p.protectOthers, harden_transforms=p.hardenTransform)  # fmt: skip
        self.set_inputs(Inputs(p.inputVolume, p.segmentation, p.segmentId, p.positivePoints, p.negativePoints))

    def cleanup(self) -> None:
        self.setParameterNode(None)
        SegmentationController.cleanup(self)

    def registryModels(self) -> list:
        """(id, name, description) of each model in model_weights.json; empty when it cannot be read."""
        try:
            return slicer_panel.registry_models()
        except Exception as exc:  # a broken registry must not break the panel; the message says why
            slicer.util.showStatusMessage(f"SAM-Med3D: model list unavailable: {exc}", 5000)
            return []

    def ensurePackages(self) -> bool:
        """pip-install the small packages the weights cache uses when missing; True when it installed any."""
        missing = slicer_panel.missing_packages()
        if missing:
            slicer.util.pip_install(" ".join(missing))
        return bool(missing)

    def torchReady(self) -> bool:
        """PyTorch is installed or not needed (the Server device runs the network); else :meth:`ensureTorch`."""
        return self.uses_server or self.ensureTorch()

    @staticmethod
    def ensureTorch(askConfirmation: bool = True) -> bool:
        """PyTorch through the PyTorch extension (EXTENSION_DEPENDS), which asks the user first (not in testing
        mode). False when it is not installed (declined, or the PyTorch extension is absent)."""
        if importlib.util.find_spec("torch") is not None:
            return True
        try:
            import PyTorchUtils
        except ImportError:
            return False
        return PyTorchUtils.PyTorchUtilsLogic().installTorch(askConfirmation=askConfirmation) is not None

    def ensureDefaults(self, p: SAMMed3DParameterNode) -> None:
        """The first volume, and the two point lists (green positive, red negative), unless already set."""
        slicer_panel.ensure_defaults(slicer.mrmlScene, p)

    def addSegment(self, p: SAMMed3DParameterNode) -> str:
        return slicer_panel.add_segment(slicer.mrmlScene, p)


class SAMMed3DTest(ScriptedLoadableModuleTest):
    """Runs SAMMed3DLib.slicer.scenario in the application scene: the same checks as the headless pytest.
    Without PyTorch it installs it through the PyTorch extension (no question in testing mode), else skips."""

    def setUp(self) -> None:
        slicer.mrmlScene.Clear()

    def runTest(self) -> None:
        self.setUp()
        self.test_phantom_scenario()
        self.setUp()
        self.test_real_network()

    def _requireTorch(self) -> None:
        testing = bool(getattr(slicer.app, "testingEnabled", lambda: False)())
        if importlib.util.find_spec("torch") is None and not (testing and SAMMed3DLogic.ensureTorch(False)):
            self.skipTest("PyTorch is not installed (the PyTorch extension installs it)")

    def test_phantom_scenario(self) -> None:
        self._requireTorch()
        from SAMMed3DLib.slicer.scenario import PhantomModel, Scenario

        self.delayDisplay("Phantom: click, protection, undo/redo, second volume")
        scenario = Scenario(slicer.mrmlScene, model=PhantomModel())
        try:
            scenario.run_all()
        finally:
            scenario.controller.cleanup()
        self.delayDisplay("Phantom scenario passed")

    def test_real_network(self) -> None:
        self._requireTorch()
        from SAMMed3DLib.slicer.scenario import SPHERE_CENTER_RAS, Scenario, tiny_checkpoint

        self.delayDisplay("Real network (tiny random weights) end to end")
        with tempfile.TemporaryDirectory() as folder:
            scenario = Scenario(slicer.mrmlScene, checkpoint=tiny_checkpoint(Path(folder) / "tiny.pth"))
            try:
                scenario.click(SPHERE_CENTER_RAS)
                self.assertIsNone(scenario.controller.last_error)
                self.assertTrue(scenario.controller.can_undo)
            finally:
                scenario.controller.cleanup()
        self.delayDisplay("Real network passed")


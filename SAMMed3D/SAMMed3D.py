"""SAM-Med3D: interactive 3-D segmentation in 3D Slicer.

Shape of the Slicer scripted-module template: Module, parameter node, thin Widget (Qt wiring only), thin Logic
(delegates to SAMMed3DLib.slicer.controller), Test (runs SAMMed3DLib.slicer.scenario, the same code as pytest).
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

from SAMMed3DLib.slicer import panel as slicer_panel  # noqa: E402
from SAMMed3DLib.slicer.controller import DEFAULT_MODEL, Inputs, SegmentationController  # noqa: E402

POLL_MS = 50  # worker polling period
PROGRESS_DELAY_S = 0.4  # a busy indicator appears only for work that takes longer than this
LOCAL_CHECKPOINT = "__local__"
TORCH_NEEDED = "SAM-Med3D needs PyTorch: the point was removed. Place it again to be asked to install PyTorch."
SHORTCUTS = (("A", "placePositive"), ("S", "placeNegative"), ("Ctrl+Z", "undo"), ("Ctrl+Y", "redo"),
             ("Ctrl+Shift+Z", "redo"), ("Return", "finish"), ("Enter", "finish"))  # fmt: skip
HELP = """Interactive 3-D segmentation with SAM-Med3D.
<ol><li>Select the input volume and a segment (<b>New segment</b> adds one).</li>
<li>Pick a model; press <b>Download</b> once (SAM-Med3D-turbo is recommended).</li>
<li>Press <b>+ point</b> and click on the structure in any slice or 3-D view: the segment appears.
Add more positive (green) or <b>&minus; point</b> negative (red) clicks to refine it.</li>
<li><b>Finish</b> keeps the result. Other segments are never modified.</li></ol>
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
    device: Annotated[str, Choice(["auto", "cuda", "mps", "cpu"])] = "auto"
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
        self.logic.controller.on_message = self._showMessage
        self.timer = qt.QTimer()
        self.timer.setInterval(POLL_MS)
        self.timer.connect("timeout()", self._poll)
        self.ui.progressBar.setVisible(False)
        self.ui.deviceWarningLabel.setVisible(False)
        self._fillModels()
        for label, value in (("auto", "auto"), ("CUDA", "cuda"), ("MPS (Apple)", "mps"), ("CPU", "cpu")):
            self.ui.deviceSelector.addItem(label, value)
        self.ui.segmentSelector.connect("currentSegmentChanged(QString)", self._onSegmentChanged)
        self.ui.segmentSelector.connect("currentNodeChanged(vtkMRMLNode*)", self._onSegmentationChanged)
        self.ui.modelSelector.connect("activated(int)", self._onModelChosen)
        self.ui.deviceSelector.connect("currentIndexChanged(int)", self._onDeviceChosen)
        self.ui.addSegmentButton.connect("clicked()", self._onAddSegment)
        self.ui.downloadButton.connect("clicked()", self._onDownload)
        self.ui.positiveButton.connect("toggled(bool)", lambda on: self._placePoints(True, on))
        self.ui.negativeButton.connect("toggled(bool)", lambda on: self._placePoints(False, on))
        for name in ("undo", "redo", "reset", "finish"):
            getattr(self.ui, f"{name}Button").connect("clicked()", getattr(self, name))
        for keys, slot in SHORTCUTS:
            shortcut = qt.QShortcut(qt.QKeySequence(keys), slicer.util.mainWindow())
            shortcut.setEnabled(False)
            shortcut.connect("activated()", getattr(self, slot))
            self._shortcuts.append(shortcut)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.initializeParameterNode()

    def cleanup(self) -> None:
        self.removeObservers()
        self.timer.stop()
        self.logic.controller.cleanup()

    def enter(self) -> None:
        self.initializeParameterNode()
        for shortcut in self._shortcuts:
            shortcut.setEnabled(True)

    def exit(self) -> None:
        for shortcut in self._shortcuts:
            shortcut.setEnabled(False)
        self._stopPlacing()
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._onParameterNodeModified)

    def onSceneStartClose(self, caller, event) -> None:
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
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._onParameterNodeModified)
            for node in (parameterNode.positivePoints, parameterNode.negativePoints):
                self._observePoints(node)
            self._onParameterNodeModified()

    def _onParameterNodeModified(self, caller=None, event=None) -> None:
        p = self._parameterNode
        self.ui.segmentSelector.setCurrentNode(p.segmentation)
        if p.segmentId:
            self.ui.segmentSelector.setCurrentSegmentID(p.segmentId)
        self.ui.deviceSelector.setCurrentIndex(max(self.ui.deviceSelector.findData(p.device), 0))
        index = self.ui.modelSelector.findData(p.model)
        self.ui.modelSelector.setCurrentIndex(index if index >= 0 else self.ui.modelSelector.count - 1)
        self.logic.applyParameters(p)
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

    def _onSegmentationChanged(self, node) -> None:
        if self._parameterNode and self._parameterNode.segmentation != node:
            self._parameterNode.segmentation = node

    def _onSegmentChanged(self, segmentId: str) -> None:
        if self._parameterNode and self._parameterNode.segmentId != segmentId:
            self._parameterNode.segmentId = segmentId or ""

    def _onAddSegment(self) -> None:
        self.logic.addSegment(self._parameterNode)

    def _ensureDependencies(self) -> bool:
        """The small pip packages (then the model list can be read: refresh it) and PyTorch (asks first)."""
        if self.logic.ensurePackages():
            self._fillModels()
            if self._parameterNode:
                self._onParameterNodeModified()
        return self.logic.ensureTorch()

    def _onDownload(self) -> None:
        if not self._ensureDependencies():
            return
        progress = self.logic.controller.download()
        dialog = qt.QProgressDialog("Downloading the model\u2026", "Cancel", 0, 100, slicer.util.mainWindow())
        dialog.setWindowTitle("SAM-Med3D")
        dialog.setMinimumDuration(0)
        dialog.connect("canceled()", progress.cancel)
        self._progressDialog = dialog
        self.timer.start()

    def _placePoints(self, positive: bool, on: bool) -> None:
        """Persistent place mode on the green (positive) or red (negative) list: every click is a prompt."""
        other = self.ui.negativeButton if positive else self.ui.positiveButton
        if not on:
            if not other.checked:
                self._stopPlacing()
            return
        other.blockSignals(True)
        other.checked = False
        other.blockSignals(False)
        node = self._parameterNode.positivePoints if positive else self._parameterNode.negativePoints
        selectionNode = slicer.app.applicationLogic().GetSelectionNode()
        selectionNode.SetReferenceActivePlaceNodeClassName("vtkMRMLMarkupsFiducialNode")
        selectionNode.SetActivePlaceNodeID(node.GetID())
        interactionNode = slicer.app.applicationLogic().GetInteractionNode()
        interactionNode.SetPlaceModePersistence(1)
        interactionNode.SetCurrentInteractionMode(interactionNode.Place)

    def _stopPlacing(self) -> None:
        interactionNode = slicer.app.applicationLogic().GetInteractionNode()
        interactionNode.SetCurrentInteractionMode(interactionNode.ViewTransform)

    def placePositive(self) -> None:
        self.ui.positiveButton.checked = not self.ui.positiveButton.checked

    def placeNegative(self) -> None:
        self.ui.negativeButton.checked = not self.ui.negativeButton.checked

    def undo(self) -> None:
        self._run(self.logic.controller.undo)

    def redo(self) -> None:
        self._run(self.logic.controller.redo)

    def reset(self) -> None:
        self._run(self.logic.controller.reset)

    def finish(self) -> None:
        self.ui.positiveButton.checked = self.ui.negativeButton.checked = False
        self._run(self.logic.controller.finish)

    def _observePoints(self, node) -> None:
        if node is not None and not self.hasObserver(node, node.PointPositionDefinedEvent, self._onPointPlaced):
            self.addObserver(node, node.PointPositionDefinedEvent, self._onPointPlaced)

    def _onPointPlaced(self, caller=None, event=None) -> None:
        self._run(lambda: self.logic.processNewPoints(self._ensureDependencies()))

    def _run(self, action) -> None:
        action()
        self.timer.start()
        self._updateState()

    # --- feedback -------------------------------------------------------------------------------------------

    def _poll(self) -> None:
        busy = self.logic.controller.poll()
        worker = self.logic.controller.worker
        self.ui.progressBar.setVisible(busy and worker.running_for() > PROGRESS_DELAY_S)
        progress = self.logic.controller.download_progress
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
        controller = self.logic.controller
        ready = self._parameterNode is not None and self._parameterNode.inputVolume is not None
        self.ui.positiveButton.enabled = self.ui.negativeButton.enabled = ready
        self.ui.undoButton.enabled = controller.can_undo
        self.ui.redoButton.enabled = controller.can_redo
        self.ui.resetButton.enabled = self.ui.finishButton.enabled = controller.can_undo
        note = self.logic.deviceNote()
        self.ui.deviceWarningLabel.setVisible("CPU" in note)
        self.ui.deviceWarningLabel.text = note
        if controller.status and controller.status != self._shownStatus:  # a newer message stays until then
            self._shownStatus = controller.status
            self.ui.statusLabel.setStyleSheet("")
            self.ui.statusLabel.text = controller.status

    def _showMessage(self, text: str, isError: bool) -> None:
        self._shownStatus = self.logic.controller.status
        self.ui.statusLabel.setStyleSheet("color: #d03030;" if isError else "color: #c07000;")
        self.ui.statusLabel.text = text
        slicer.util.showStatusMessage(f"SAM-Med3D: {text}", 5000)


class SAMMed3DLogic(ScriptedLoadableModuleLogic):
    """Thin: MRML node bookkeeping for the panel; all segmentation work is in ``self.controller``."""

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        self.controller = SegmentationController()
        # Checkpoints live in Slicer's cache folder (Application Settings → Cache), not the CLI's default one.
        self.controller.set_options(cache_dir=os.path.join(slicer.app.cachePath, "SAMMed3D"))

    def getParameterNode(self) -> SAMMed3DParameterNode:
        return SAMMed3DParameterNode(super().getParameterNode())

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

    def ensureTorch(self) -> bool:
        """PyTorch through the PyTorch extension (EXTENSION_DEPENDS), which asks the user first."""
        if importlib.util.find_spec("torch") is not None:
            return True
        import PyTorchUtils

        return PyTorchUtils.PyTorchUtilsLogic().installTorch(askConfirmation=True) is not None

    def processNewPoints(self, dependenciesReady: bool) -> None:
        """Run the newly placed points, or, without PyTorch (install declined), remove them with one message."""
        if dependenciesReady:
            self.controller.process_new_points()
        else:
            self.controller.discard_new_points(TORCH_NEEDED)

    def deviceNote(self) -> str:
        try:
            return self.controller.device_note()
        except ImportError:
            return "PyTorch is not installed yet (it is installed on first use)."

    def ensureDefaults(self, p: SAMMed3DParameterNode) -> None:
        """The first volume, and the two point lists (green positive, red negative), unless already set."""
        slicer_panel.ensure_defaults(slicer.mrmlScene, p)

    def addSegment(self, p: SAMMed3DParameterNode) -> str:
        return slicer_panel.add_segment(slicer.mrmlScene, p)

    def applyParameters(self, p: SAMMed3DParameterNode) -> None:
        self.controller.set_options(model=p.model, device=p.device, auto_extend=p.autoExtend,
                                    start_from_existing=p.startFromExisting, protect_others=p.protectOthers,
                                    harden_transforms=p.hardenTransform)  # fmt: skip
        self.controller.set_inputs(
            Inputs(p.inputVolume, p.segmentation, p.segmentId, p.positivePoints, p.negativePoints)
        )


class SAMMed3DTest(ScriptedLoadableModuleTest):
    """Runs SAMMed3DLib.slicer.scenario in the application scene: the same checks as the headless pytest."""

    def setUp(self) -> None:
        slicer.mrmlScene.Clear()

    def runTest(self) -> None:
        self.setUp()
        self.test_phantom_scenario()
        self.setUp()
        self.test_real_network()

    def test_phantom_scenario(self) -> None:
        from SAMMed3DLib.slicer.scenario import PhantomModel, Scenario

        self.delayDisplay("Phantom: click, protection, undo/redo, second volume")
        scenario = Scenario(slicer.mrmlScene, model=PhantomModel())
        try:
            scenario.run_all()
        finally:
            scenario.controller.cleanup()
        self.delayDisplay("Phantom scenario passed")

    def test_real_network(self) -> None:
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

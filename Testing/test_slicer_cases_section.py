"""The module panel's Cases section, headless: the real section, desk, worklist and controller on a real MRML scene
and real files, with stand-ins for the few Qt widgets it drives (a folder picker, a list, three buttons, a label)
that model what the section relies on: signals, and a list that forgets its selection when cleared."""

import re
from pathlib import Path
from types import SimpleNamespace

import pytest
import SimpleITK as sitk
from support.mainloop import under_main_loop  # noqa: F401 - the fixture, used by pytestmark
from support.phantoms import sphere_phantom
from support.standin import StandInModel
from test_packaging import ui_widget_names

from SAMMed3DLib.slicer import markups
from SAMMed3DLib.slicer.cases_section import CasesSection
from SAMMed3DLib.slicer.controller import Inputs, SegmentationController
from SAMMed3DLib.worklist import DONE

pytestmark = pytest.mark.usefixtures("under_main_loop")

CENTRE = (-60.0, -60.0, 60.0)  # RAS mm, the phantom sphere's centre


class Widget:
    """A Qt widget as far as the section uses it: PythonQt's ``connect(signal, slot)``, and ``emit``."""

    def __init__(self, **properties):
        self.slots = {}
        self.__dict__.update(properties)

    def connect(self, signal, slot):
        self.slots.setdefault(signal, []).append(slot)

    def emit(self, signal, *args):
        for slot in self.slots.get(signal, []):
            slot(*args)


class PathLineEdit(Widget):
    """ctkPathLineEdit: setting ``currentPath`` to another value announces it."""

    def __init__(self):
        super().__init__()
        self._path = ""

    @property
    def currentPath(self):  # noqa: N802 - Qt's name
        return self._path

    @currentPath.setter
    def currentPath(self, path):  # noqa: N802
        if path != self._path:
            self._path = path
            self.emit("currentPathChanged(QString)", path)


class ListWidget(Widget):
    def __init__(self):
        super().__init__(items=[], currentRow=-1)

    def clear(self):
        self.items, self.currentRow = [], -1

    def addItem(self, text):  # noqa: N802
        self.items.append(text)

    def double_click(self, row):
        self.currentRow = row
        self.emit("itemDoubleClicked(QListWidgetItem*)", object())


def panel_ui():
    return SimpleNamespace(casesFolderPicker=PathLineEdit(), casesList=ListWidget(), casesSummaryLabel=Widget(text=""),
                           **{name: Widget(enabled=True) for name in ("nextCaseButton", "saveCaseButton",
                                                                      "saveNextCaseButton")})  # fmt: skip


class Panel:
    """The module panel around the section: its parameter node feeds the controller (as the Logic does), the
    user's answers to the Yes/No question and the status line's messages are recorded."""

    def __init__(self, scene, owner, folder=""):
        self.controller = SegmentationController()
        self.controller.set_options(device="cpu")
        self.controller.set_model("stand-in", StandInModel())
        positive, negative = (markups.new_point_list(scene, n, c) for n, c in markups.POINT_LISTS)
        self.parameters = SimpleNamespace(inputVolume=None, segmentation=None, segmentId="", positivePoints=positive,
                                          negativePoints=negative)  # fmt: skip
        self.controller.enter(scene)
        self.answers, self.questions, self.messages = [], [], []
        self.ui = panel_ui()
        self.ui.casesFolderPicker._path = str(folder)  # restored from the settings before the section connects
        self.section = CasesSection(self.ui, scene, self.controller, lambda: self.parameters, self._confirm,
                                    lambda text, error: self.messages.append((text, error)), owner)  # fmt: skip

    def _confirm(self, question):
        self.questions.append(question)
        return self.answers.pop(0)

    def click(self, point_ras):
        self.start_click(point_ras)
        self.controller.wait()
        assert self.controller.last_error is None, self.controller.last_error

    def start_click(self, point_ras):
        """The panel's selection reaches the controller (the Logic follows its parameter node), then a click
        that the controller queues."""
        p = self.parameters
        self.controller.set_inputs(Inputs(p.inputVolume, p.segmentation, p.segmentId, p.positivePoints,
                                          p.negativePoints))  # fmt: skip
        p.positivePoints.AddControlPointWorld(*point_ras)

    def press(self, button):
        getattr(self.ui, button).emit("clicked()")

    @property
    def rows(self):
        return self.ui.casesList.items


@pytest.fixture
def folder(tmp_path) -> Path:
    folder = tmp_path / "data"
    folder.mkdir()
    image = sphere_phantom(size=(40, 40, 40), centre_ras=CENTRE)[0]
    for name in ("a", "b", "c"):
        sitk.WriteImage(image, str(folder / f"{name}.nii.gz"))
    return folder


@pytest.fixture
def panel(app):
    panel = Panel(app.scene, "ana")
    yield panel
    panel.controller.cleanup()


def test_the_section_lists_opens_saves_and_moves_on(panel, folder):
    assert panel.ui.casesSummaryLabel.text == "Choose a data folder." and not panel.ui.saveCaseButton.enabled
    panel.ui.casesFolderPicker.currentPath = str(folder)
    assert panel.rows == ["a \u2014 to do", "b \u2014 to do", "c \u2014 to do"]
    assert panel.ui.casesSummaryLabel.text == "3 cases: 3 to do, 0 in progress, 0 done"

    panel.press("nextCaseButton")
    assert panel.rows[0] == "\u25b6 a \u2014 to do" and panel.ui.casesList.currentRow == 0
    assert panel.parameters.inputVolume.GetName() == "a" and panel.parameters.segmentId
    assert panel.ui.saveCaseButton.enabled and panel.ui.saveNextCaseButton.enabled
    panel.click(CENTRE)

    panel.press("saveNextCaseButton")
    assert (folder / "a.seg.nrrd").is_file() and (folder / "a.prompts.mrk.json").is_file()
    assert panel.rows[:2] == ["a \u2014 done \u00b7 1 segment \u00b7 1 click", "\u25b6 b \u2014 to do"]
    assert panel.parameters.inputVolume.GetName() == "b"

    panel.press("saveCaseButton")
    assert panel.messages[-1] == ("Saved b (in progress).", False)
    assert panel.rows[1] == "\u25b6 b \u2014 in progress \u00b7 1 segment"


def test_unsaved_changes_ask_first(panel, folder):
    panel.ui.casesFolderPicker.currentPath = str(folder)
    panel.press("nextCaseButton")
    panel.click(CENTRE)
    panel.answers = [False]
    panel.ui.casesList.double_click(2)
    assert "a has unsaved changes" in panel.questions[-1] and panel.section.desk.current.name == "a"
    assert panel.rows[0].startswith("\u25b6 a")
    panel.answers = [False]
    panel.ui.casesFolderPicker.currentPath = str(folder.parent)  # another folder: the case would close
    assert panel.section.desk.current.name == "a" and panel.ui.casesFolderPicker.currentPath == str(folder)
    panel.answers = [True]
    panel.ui.casesList.double_click(2)
    assert panel.section.desk.current.name == "c" and panel.parameters.inputVolume.GetName() == "c"
    assert not (folder / "a.seg.nrrd").exists()


def test_a_colleague_sees_the_open_case_and_next_skips_it(app, panel, folder):
    panel.ui.casesFolderPicker.currentPath = str(folder)
    panel.press("nextCaseButton")
    colleague = Panel(app.scene, "ben")
    colleague.ui.casesFolderPicker.currentPath = str(folder)
    assert colleague.rows[0] == "a \u2014 to do \u00b7 open by ana"
    assert colleague.ui.casesSummaryLabel.text.endswith("(1 open elsewhere)")
    colleague.ui.casesList.double_click(0)
    assert colleague.messages[-1] == ("a is open by ana", True) and colleague.section.desk.current is None
    colleague.press("nextCaseButton")
    assert colleague.section.desk.current.name == "b"
    colleague.start_click(CENTRE)  # a click still running ...
    assert colleague.controller.busy
    colleague.section.close()  # ... when the scene closes: it lands, then the lock is given back
    assert colleague.section.desk.current is None and not colleague.controller.busy
    panel.section.heartbeat()
    assert panel.rows[1] == "b \u2014 to do"
    colleague.controller.cleanup()


def test_the_last_case_done_says_so(panel, folder):
    for name in ("b", "c"):
        (folder / f"{name}.nii.gz").unlink()
    panel.ui.casesFolderPicker.currentPath = str(folder)
    panel.press("nextCaseButton")
    panel.press("saveNextCaseButton")
    assert panel.messages[-1] == ("Saved a as done; no case is left to do.", False)
    assert panel.section.desk.worklist.case("a").state == DONE
    panel.press("nextCaseButton")
    assert "No case is left to do" in panel.messages[-1][0]


def test_the_remembered_folder_is_listed_when_the_module_starts(app, folder):
    panel = Panel(app.scene, "ana", folder)
    assert panel.rows == ["a \u2014 to do", "b \u2014 to do", "c \u2014 to do"] and panel.section.desk.current is None
    panel.controller.cleanup()


def test_a_folder_that_is_not_one_is_one_message(panel, tmp_path):
    panel.ui.casesFolderPicker.currentPath = str(tmp_path / "nowhere")
    assert panel.messages == [(f"{tmp_path / 'nowhere'} is not a folder", True)]
    assert panel.rows == [] and not panel.ui.nextCaseButton.enabled


def test_every_widget_the_section_drives_is_in_the_ui():
    section = Path(__file__).resolve().parents[1] / "SAMMed3DLib" / "slicer" / "cases_section.py"
    source = section.read_text(encoding="utf-8")
    used = set(re.findall(r"\bui\.(\w+)", source))
    assert len(used) == 6 and used <= ui_widget_names()


def test_every_method_the_widget_hands_out_exists():
    """SAMMed3DWidget wires its own methods to the logic, the Cases section, timers and buttons (``self.name``
    handed out, not called): each must be defined in the class, set in it, or come from Slicer's base classes."""
    import ast

    tree = ast.parse((Path(__file__).resolve().parents[1] / "SAMMed3D" / "SAMMed3D.py").read_text(encoding="utf-8"))
    widget = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "SAMMed3DWidget")
    defined = {n.name for n in widget.body if isinstance(n, ast.FunctionDef)}
    assigned = {t.attr for n in ast.walk(widget) if isinstance(n, (ast.Assign, ast.AnnAssign))
                for t in (n.targets if isinstance(n, ast.Assign) else [n.target])
                for t in ast.walk(t) if isinstance(t, ast.Attribute)}  # fmt: skip
    from_slicer = {"parent", "layout", "resourcePath", "addObserver", "removeObserver", "removeObservers"}
    used = {n.attr for n in ast.walk(widget)
            if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name) and n.value.id == "self"}  # fmt: skip
    assert used - defined - assigned - from_slicer == set()

"""The module panel's *Cases* section: the worklist of a data folder in Slicer, over a :class:`.cases.CaseDesk`.

It drives the section's widgets through their PythonQt signals and properties, so it imports no Qt and its tests
run headless with stand-in widgets. ``ui`` holds them by name (``slicer.util.childWidgetVariables``):

- ``casesFolderPicker`` (ctkPathLineEdit, folders): ``currentPathChanged(QString)``;
- ``casesList`` (QListWidget): ``clear()``, ``addItem(text)``, ``currentRow``, ``itemDoubleClicked(...)``;
- ``nextCaseButton``, ``saveCaseButton``, ``saveNextCaseButton`` (QPushButton): ``clicked()``, ``enabled``;
- ``casesSummaryLabel`` (QLabel): ``text``.

The module hands in ``parameters()`` (its parameter node: opening a case selects its volume, segmentation and
first segment there), ``confirm(question) -> bool`` (a Yes/No dialog) and ``report(text, is_error)`` (its
status line), and calls :meth:`CasesSection.heartbeat` every :data:`~SAMMed3DLib.worklist.HEARTBEAT_S` seconds.
"""

import getpass
import socket
from pathlib import Path
from typing import Any, Callable, List, Optional, Tuple

from ..errors import InputError
from ..worklist import HEARTBEAT_S, Case, Worklist, case_line, counts_line
from .cases import CaseDesk, OpenCase, UnsavedChangesError

__all__ = ["HEARTBEAT_S", "CasesSection", "default_owner"]

LOCK_LOST = ("Another session took this case over while Slicer was not responding; Save takes it back if it "
             "is free again.")  # fmt: skip


def default_owner() -> str:
    """How the others see this annotator: user name and machine."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no user name in the environment or the password database
        user = "someone"
    return f"{user} on {socket.gethostname()}"


class CasesSection:
    """See the module docstring. ``owner``: the name the others see (default: user and machine)."""

    def __init__(self, ui: Any, scene, controller, parameters: Callable[[], Any], confirm: Callable[[str], bool],
                 report: Callable[[str, bool], None], owner: Optional[str] = None) -> None:  # fmt: skip
        self.ui, self.scene, self.controller = ui, scene, controller
        self.parameters, self.confirm, self.report = parameters, confirm, report
        self.owner = owner or default_owner()
        self.desk: Optional[CaseDesk] = None
        self._names: List[str] = []  # the list's rows
        ui.casesFolderPicker.connect("currentPathChanged(QString)", self.set_folder)
        ui.casesList.connect("itemDoubleClicked(QListWidgetItem*)", lambda item: self.open_selected())
        ui.nextCaseButton.connect("clicked()", self.next)
        ui.saveCaseButton.connect("clicked()", self.save)
        ui.saveNextCaseButton.connect("clicked()", self.save_and_next)
        remembered = ui.casesFolderPicker.currentPath  # the picker restores the last folder from Slicer's settings
        if remembered and Path(remembered).is_dir():
            self.set_folder(remembered)
        self.refresh()

    # --- actions --------------------------------------------------------------------------------------------

    def set_folder(self, path: str) -> None:
        """Work on the cases of the folder ``path`` ("" or a non-folder: none); the open case is closed first (a
        user who keeps its unsaved changes keeps the folder too)."""
        if self.desk is not None:
            if path and Path(path).resolve() == self.desk.worklist.folder.resolve():
                return
            if not self._run(lambda discard: self.desk.close(discard))[0]:
                self.ui.casesFolderPicker.currentPath = str(self.desk.worklist.folder)
                return
        self.desk = None
        if path:
            try:
                self.desk = CaseDesk(self.scene, self.controller, Worklist(path, self.owner))
            except InputError as exc:
                self.report(str(exc), True)
        self.refresh()

    def open_selected(self) -> None:
        """Open the case of the selected row."""
        row = self.ui.casesList.currentRow
        if self.desk is not None and 0 <= row < len(self._names):
            self._run(lambda discard: self.desk.open(self._names[row], discard))

    def next(self) -> None:
        """Open the next case to do."""
        if self.desk is None:
            return
        done, opened = self._run(lambda discard: self.desk.next(discard))
        if done and opened is None:
            self.report("No case is left to do (the others are done, in progress or open elsewhere).", False)

    def save(self) -> None:
        """Save the open case (in progress)."""
        if self.desk is not None and self._run(lambda discard: self.desk.save())[0]:
            self.report(f"Saved {self.desk.current.name} (in progress).", False)

    def save_and_next(self) -> None:
        """Save the open case as done and open the next one to do."""
        if self.desk is None or not self._run(lambda discard: self.desk.save(done=True))[0]:
            return
        saved = self.desk.current.name
        done, opened = self._run(lambda discard: self.desk.next(discard))
        if done and opened is None:
            self.report(f"Saved {saved} as done; no case is left to do.", False)

    def heartbeat(self) -> None:
        """Keep the open case's lock alive (the module's timer); say so once if it was lost."""
        if self.desk is not None and not self.desk.heartbeat():
            self.report(LOCK_LOST, True)
        self.refresh()

    def close(self) -> None:
        """The scene closes or the module goes: the case's lock is given back (its nodes go with the scene)."""
        if self.desk is not None and self.desk.open_case is not None:
            self.controller.wait()  # a click still running lands first: its nodes are still there
            self.desk.close(discard=True)
        self.refresh()

    # --- the widgets ----------------------------------------------------------------------------------------

    def refresh(self) -> None:
        """The list (states, counts, who has a case open), the summary line and the buttons."""
        cases: List[Case] = []
        if self.desk is not None:
            try:
                cases = self.desk.cases()
            except InputError as exc:  # the folder went away (an unmounted share)
                self.report(str(exc), True)
        current = self.desk.current.name if self.desk is not None and self.desk.current else None
        row = self.ui.casesList.currentRow
        self.ui.casesList.clear()
        for case in cases:
            self.ui.casesList.addItem(("\u25b6 " if case.name == current else "") + case_line(case))
        self._names = [case.name for case in cases]
        if current in self._names:
            row = self._names.index(current)
        self.ui.casesList.currentRow = row if 0 <= row < len(cases) else -1
        self.ui.casesSummaryLabel.text = counts_line(cases) if self.desk is not None else "Choose a data folder."
        self.ui.nextCaseButton.enabled = self.desk is not None
        self.ui.saveCaseButton.enabled = self.ui.saveNextCaseButton.enabled = current is not None

    def _run(self, action: Callable[[bool], Any]) -> Tuple[bool, Any]:
        """``action(discard)``: first without discarding; unsaved changes ask the user. Messages go to ``report``;
        an opened case is selected in the panel. Returns (whether it ran, its result)."""
        try:
            try:
                result = action(False)
            except UnsavedChangesError as exc:
                if not self.confirm(f"{exc}\n\nDiscard the changes?"):
                    return False, None
                result = action(True)
        except InputError as exc:
            self.report(str(exc), True)
            self.refresh()
            return False, None
        if isinstance(result, OpenCase):
            self._select(result)
        self.refresh()
        return True, result

    def _select(self, opened) -> None:
        """The opened case's volume, segmentation and first segment in the panel (and so in the controller)."""
        parameters = self.parameters()
        if parameters is not None:
            parameters.inputVolume = opened.volume
            parameters.segmentation = opened.segmentation
            parameters.segmentId = opened.segment_id

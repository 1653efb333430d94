"""The page's worklist (with ``--data``): the folder's cases with their states and who has one open, Next, Save,
Save & next, over the same :class:`~SAMMed3DLib.slicer.cases.CaseDesk` as the Slicer module's *Cases* section.

Case names come from the worklist's own listing and are looked up among the folder's cases by the worklist, so
nothing the page sends names a path. The open case's lock is kept alive from the event loop and given back when
the session ends; a case with unsaved changes asks before another one replaces it."""

import asyncio
import time
from typing import Any, Callable, Optional

from trame.widgets import html
from trame.widgets import vuetify3 as v
from trame_server.utils import asynchronous

from ..errors import InputError
from ..slicer.cases import CaseDesk, OpenCase, UnsavedChangesError
from ..worklist import HEARTBEAT_S, Worklist, counts_line
from .station import Station

LIST_REFRESH_S = 5.0
"""How often the list is read again (seconds): the colleagues' progress and open cases appear this late."""


class WorklistPanel:
    """The worklist of ``station.config.data`` for one browser session (``owner``: the name the others see)."""

    def __init__(self, station: Station, owner: str) -> None:
        self.station = station
        self.desk = CaseDesk(station.slicer.scene, station.controller, Worklist(station.config.data, owner))
        self._pending: Optional[Callable[[bool], Any]] = None  # an action waiting for "discard the changes?"
        self._task = asynchronous.create_task(self._keep_alive())
        station.on_close.append(self.close)
        station.state.update({"cases": [], "cases_summary": "", "case_open": "", "owner": owner, "confirm": ""})
        self.refresh()

    # --- page actions ---------------------------------------------------------------------------------------

    def open(self, name: str) -> None:
        self._run(lambda discard: self.desk.open(str(name), discard))

    def next(self) -> None:
        if self._run(lambda discard: self.desk.next(discard)) is None:
            self.station.show_message("No case is left to do (the others are done, in progress or open elsewhere).",
                                      False)  # fmt: skip

    def save(self) -> None:
        case = self._run(lambda discard: self.desk.save())
        self.station.show_message(f"Saved {case.name} (in progress).", False)

    def save_and_next(self) -> None:
        saved = self._run(lambda discard: self.desk.save(done=True)).name
        if self._run(lambda discard: self.desk.next(discard)) is None:
            self.station.show_message(f"Saved {saved} as done; no case is left to do.", False)
        else:
            self.station.show_message(f"Saved {saved} as done.", False)

    def answer(self, discard: bool) -> None:
        """The page's answer to "discard the unsaved changes?"."""
        pending, self._pending = self._pending, None
        self.station.state.confirm = ""
        if discard and pending is not None:
            self._run(pending, discard=True)

    def set_owner(self, name: str) -> None:
        name = " ".join(str(name or "").split())[:80]
        if not name:
            raise InputError("enter your name: the others see it on the cases you have open")
        self.desk.worklist.owner = name
        self.station.state.owner = name

    # --- plumbing -------------------------------------------------------------------------------------------

    def _run(self, action: Callable[[bool], Any], discard: bool = False) -> Any:
        """``action(discard)``; an opened case is shown; unsaved changes ask the page first (nothing happens
        until it answers). Errors reach the page as one line (the station's guard)."""
        try:
            result = action(discard)
        except UnsavedChangesError as exc:
            self._pending = action
            self.station.state.confirm = f"{exc} Discard them?"
            return None
        finally:
            self.refresh()
        if isinstance(result, OpenCase):
            self.station.show_case(result.volume, result.segmentation, result.case.name, result.segment_id)
            self.refresh()
        return result

    def refresh(self) -> None:
        try:
            cases = self.desk.cases()
        except InputError as exc:  # the folder went away (an unmounted share)
            self.station.show_message(str(exc), True)
            return
        current = self.desk.current.name if self.desk.current else ""
        with self.station.state as state:
            state.cases = [case.summary() for case in cases]
            state.cases_summary = counts_line(cases)
            state.case_open = current

    async def _keep_alive(self) -> None:
        beat = time.monotonic()
        while True:
            await asyncio.sleep(LIST_REFRESH_S)
            if time.monotonic() - beat >= HEARTBEAT_S:
                beat = time.monotonic()
                if not self.desk.heartbeat():
                    self.station.show_message("Another session took this case over; Save takes it back if it is "
                                              "free again.", True)  # fmt: skip
            self.refresh()

    def close(self) -> None:
        self._task.cancel()
        if self.desk.open_case is not None:
            self.desk.close(discard=True)


def attach(station: Station, owner: str) -> Callable[[], None]:
    """The worklist of the station's data folder; returns the builder of the page's case section."""
    panel = WorklistPanel(station, owner)
    act = station.guarded

    def build() -> None:
        with v.VCard(title="Cases", variant="outlined", density="compact", id="sam-worklist"):
            with v.VCardText(classes="pb-0"):
                v.VTextField(label="Your name", density="compact", hide_details=True, model_value=("owner",),
                             change=(act(panel.set_owner), "[$event.target.value]"), id="sam-owner")  # fmt: skip
                html.Div("{{ cases_summary }}", classes="sam-status mt-1", id="sam-cases-summary")
            with v.VList(density="compact", max_height=220, classes="overflow-y-auto", id="sam-cases"), v.VListItem(
                v_for="c in cases", key="c.name", active=("c.name === case_open",), disabled=("c.busy",),
                click=(act(panel.open), "[c.name]"), classes="sam-case", raw_attrs=[':data-case="c.name"'],
            ):
                v.VListItemTitle("{{ c.name }}")
                v.VListItemSubtitle("{{ c.state }}{{ c.clicks ? ' · ' + c.clicks + ' clicks' : '' }}"
                                    "{{ c.busy ? ' · open by ' + c.holder : '' }}", classes="sam-case-state")
            with v.VCardActions():
                v.VBtn("Next", click=act(panel.next), id="sam-next")
                v.VBtn("Save", click=act(panel.save), disabled=("!case_open",), id="sam-save")
                v.VBtn("Save & next", click=act(panel.save_and_next), disabled=("!case_open",), id="sam-save-next")
        dialog = v.VDialog(model_value=("confirm !== ''",), persistent=True, max_width=420)
        with dialog, v.VCard(title="Unsaved changes"):
            v.VCardText("{{ confirm }}")
            with v.VCardActions():
                v.VBtn("Discard the changes", color="red", click=act(lambda: panel.answer(True)), id="sam-discard")
                v.VBtn("Cancel", click=act(lambda: panel.answer(False)), id="sam-keep")

    return build

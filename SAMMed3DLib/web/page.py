"""The page: trame-slicer's views on the right, the module's panel on the left, the status line on top.

Every control calls one :class:`~.station.Station` method through ``station.guarded`` (a failure is one line on
the page). Keys (A, S, Ctrl+Z, Ctrl+Y / Ctrl+Shift+Z, Enter) are read by a small script on the page and sent as
one trigger; they act whenever the focus is not in a text field. Elements the tests and the benchmark look for
carry ``id`` attributes (``sam-...``)."""

from typing import Callable, Optional

from trame.widgets import client, html
from trame.widgets import vuetify3 as v
from trame_vuetify.ui.vuetify3 import SinglePageWithDrawerLayout

from ..slicer.models import DEVICE_CHOICES
from .station import WINDOW_LEVEL, Station
from .volumes import UPLOAD_SUFFIXES

KEYS_SCRIPT = """
window.addEventListener('keydown', (event) => {
  const target = event.target;
  if (target && (target.tagName === 'INPUT' || target.tagName === 'TEXTAREA' || target.isContentEditable)) return;
  const key = event.key.toLowerCase();
  let action = null;
  if (event.ctrlKey && key === 'z') action = event.shiftKey ? 'redo' : 'undo';
  else if (event.ctrlKey && key === 'y') action = 'redo';
  else if (!event.ctrlKey && !event.altKey && !event.metaKey) {
    action = {a: 'positive', s: 'negative', enter: 'finish'}[key] || null;
  }
  if (action && window.trame) {
    event.preventDefault();
    window.trame.trigger('sam_key', [action]);
  }
}, true);
"""
KEYS_HELP = "A: + point · S: − point · Ctrl+Z: undo · Ctrl+Y: redo · Enter: finish"
STYLE = """
html { overflow-y: hidden; }
.sam-status { font-family: monospace; font-size: 0.85rem; }
.sam-error { color: #ff6b6b; }
.sam-note { color: #f0b040; }
.sam-swatch { width: 14px; height: 14px; border-radius: 3px; display: inline-block; border: 1px solid #888; }
"""


def build(station: Station, case_panel: Optional[Callable[[], None]] = None) -> SinglePageWithDrawerLayout:
    """The page of ``station``; ``case_panel`` builds the case section (the worklist) in place of upload/sample."""
    server, act = station.server, station.guarded
    server.controller.trigger("sam_key")(act(lambda action: _key(station, action)))
    with SinglePageWithDrawerLayout(server, full_height=True, theme=("'dark'",)) as layout:
        layout.title.set_text("SAM-Med3D")
        client.Style(STYLE)
        client.Script(KEYS_SCRIPT)
        with layout.toolbar:
            v.VSpacer()
            html.Span("{{ volume_name }}", classes="mx-4", id="sam-case-name")
            v.VProgressLinear(indeterminate=True, absolute=True, location="bottom", v_show="busy && running_s > 0.3",
                              color="primary", id="sam-busy")  # fmt: skip
        with layout.drawer as drawer:
            drawer.width = 340
            with html.Div(classes="pa-2 d-flex flex-column ga-2"):
                _status()
                if case_panel is not None:
                    case_panel()
                else:
                    _open_volume(station, act)
                _segments(station, act)
                _clicks(station, act)
                _touch_up(station, act)
                _options(station, act)
        with layout.content:
            station.layout.initialize_layout_grid(layout)
        layout.footer.clear()
        with layout.footer:
            html.Span(KEYS_HELP, classes="sam-status", id="sam-keys")
    return layout


def _key(station: Station, action: str) -> None:
    controller = station.controller
    actions = {"positive": lambda: station.place(True), "negative": lambda: station.place(False),
               "undo": controller.undo, "redo": controller.redo, "finish": _finish(station)}  # fmt: skip
    if action in actions:
        actions[action]()


def _finish(station: Station) -> Callable[[], None]:
    def finish() -> None:
        station.stop_tools()
        station.controller.finish()

    return finish


def _status() -> None:
    with v.VCard(variant="tonal", classes="pa-2"):
        with html.Div(classes="d-flex justify-space-between"):
            html.Span("{{ status || 'Ready' }}", classes="sam-status", id="sam-status")
            html.Span("{{ clicks }} {{ clicks === 1 ? 'click' : 'clicks' }}", classes="sam-status", id="sam-clicks",
                      v_show="clicks > 0", raw_attrs=[':data-clicks="clicks"'])  # fmt: skip
        html.Div("{{ message }}", v_show="message", id="sam-message",
                 classes=("message_error ? 'sam-status sam-error' : 'sam-status sam-note'",))  # fmt: skip
        v.VProgressLinear(model_value=("download",), v_show="download >= 0", height=8, color="primary",
                          id="sam-download")  # fmt: skip
        html.Div("encoding the volume — the first click takes a few seconds", v_show="busy && running_s > 1.5",
                 classes="sam-status sam-note", id="sam-working")  # fmt: skip


def _open_volume(station: Station, act) -> None:
    with v.VCard(title="Case", variant="outlined", density="compact"), v.VCardText():
        v.VFileInput(label="Upload a volume", density="compact", accept=",".join(UPLOAD_SUFFIXES),
                     id="sam-upload", hide_details=True, prepend_icon="mdi-upload",
                     change=(act(station.upload), "[$event.target.files[0]]"))  # fmt: skip
        v.VBtn("Open the sample (MNI152 T1)", click=act(station.open_sample), block=True, classes="mt-2",
               id="sam-sample", variant="tonal")  # fmt: skip


def _segments(station: Station, act) -> None:
    with v.VCard(title="Segments", variant="outlined", density="compact"):
        with v.VList(density="compact", id="sam-segments"), v.VListItem(
            v_for="row in segments", key="row.id", active=("row.id === segment_id",), classes="sam-segment",
            click=(act(station.select_segment), "[row.id]"),
        ):
            with v.Template(v_slot_prepend=True):
                html.Span(classes="sam-swatch mr-2", style=("{background: row.color}",))
            v.VListItemTitle("{{ row.name }}")
            with v.Template(v_slot_append=True):
                v.VBtn(icon="mdi-delete", size="x-small", variant="text", title="Delete this segment",
                       click_stop=(act(station.delete_segment), "[row.id]"))  # fmt: skip
        with v.VCardActions():
            v.VBtn("Add", prepend_icon="mdi-plus", click=act(station.add_segment), id="sam-add-segment")
            v.VTextField(label="Name", density="compact", hide_details=True, id="sam-segment-name",
                         model_value=("(segments.find(s => s.id === segment_id) || {}).name",),
                         change=(act(station.rename_segment), "[segment_id, $event.target.value]"))  # fmt: skip
            with v.VMenu(close_on_content_click=False):
                with v.Template(v_slot_activator="{ props }"):
                    v.VBtn(icon="mdi-palette", v_bind="props", size="small", title="Colour", id="sam-colour")
                v.VColorPicker(mode="hex", modes=("['hex']",),
                               model_value=("(segments.find(s => s.id === segment_id) || {}).color",),
                               update_modelValue=(act(station.recolour_segment), "[segment_id, $event]"))  # fmt: skip


def _clicks(station: Station, act) -> None:
    with v.VCard(title="Clicks", variant="outlined", density="compact"), v.VCardText(classes="d-flex flex-wrap ga-1"):
        v.VBtn("+ point (A)", color=("placing === 1 ? 'green' : undefined",), id="sam-positive",
               click=act(lambda: station.place(True)))  # fmt: skip
        v.VBtn("− point (S)", color=("placing === -1 ? 'red' : undefined",), id="sam-negative",
               click=act(lambda: station.place(False)))  # fmt: skip
        v.VBtn("Undo", disabled=("!can_undo",), click=act(station.controller.undo), id="sam-undo",
               title="Ctrl+Z")  # fmt: skip
        v.VBtn("Redo", disabled=("!can_redo",), click=act(station.controller.redo), id="sam-redo",
               title="Ctrl+Y")  # fmt: skip
        v.VBtn("Reset", disabled=("!can_undo",), click=act(station.controller.reset), id="sam-reset")
        v.VBtn("Finish", disabled=("!can_undo",), click=act(_finish(station)), id="sam-finish", title="Enter")


def _touch_up(station: Station, act) -> None:
    with v.VCard(title="Touch-up and view", variant="outlined", density="compact"), v.VCardText():
        with v.VBtnToggle(model_value=("brush",), mandatory=True, density="compact", id="sam-brush",
                          update_modelValue=(act(station.brush), "[$event]")):  # fmt: skip
            v.VBtn("None", value="none")
            v.VBtn("Paint", value="paint", id="sam-paint")
            v.VBtn("Erase", value="erase", id="sam-erase")
        v.VSelect(label="Window / level", items=("wl_presets", list(WINDOW_LEVEL)), density="compact",
                  hide_details=True, classes="mt-2", id="sam-window-level",
                  update_modelValue=(act(station.window_level), "[$event]"))  # fmt: skip


def _options(station: Station, act) -> None:
    devices = [{"title": label, "value": value} for value, label in DEVICE_CHOICES.items()]
    with v.VExpansionPanels(variant="accordion"), v.VExpansionPanel(title="Options"), v.VExpansionPanelText():
        for name, label in (("protect_others", "Protect other segments"),
                            ("start_from_existing", "Start from the existing segment"),
                            ("auto_extend", "Auto-extend past the 128³ patch"),
                            ("bf16", "Fast encoder (bf16)")):  # fmt: skip
            v.VCheckbox(label=label, density="compact", hide_details=True, model_value=(f"options.{name}",),
                        update_modelValue=(act(station.set_option), f"['{name}', $event]"))  # fmt: skip
        v.VSelect(label="Device", items=("devices", devices), density="compact", hide_details=True,
                  model_value=("options.device",),
                  update_modelValue=(act(station.set_option), "['device', $event]"))  # fmt: skip
        v.VTextField(label="Team server URL", density="compact", hide_details=True,
                     v_show="options.device === 'server'", model_value=("options.server_url",),
                     change=(act(station.set_option), "['server_url', $event.target.value]"))  # fmt: skip
        v.VTextField(label="Team server token", type="password", density="compact", hide_details=True,
                     v_show="options.device === 'server'", id="sam-server-token",
                     change=(act(station.set_option), "['server_token', $event.target.value]"))  # fmt: skip
        html.Div("{{ device_note }}", classes="sam-status sam-note mt-1")
        v.VBtn("Download the model", click=act(station.download), classes="mt-2", variant="tonal",
               v_show="options.device !== 'server'")  # fmt: skip

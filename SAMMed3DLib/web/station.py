"""One browser session's labelling station: a trame server with its own Slicer scene (trame-slicer's
``SlicerApp``), four remote views and the Slicer module's controller.

The page drives :class:`~SAMMed3DLib.slicer.controller.SegmentationController` exactly as the module's Widget
does: the point lists are the module's, clicks in a view become Defined points through Slicer's own markups
widget, the controller turns them into engine steps and writes the segment; undo, redo, reset and finish are the
controller's. This class is the controller's GUI (:class:`~SAMMed3DLib.slicer.gui.Gui`): it polls the worker from
the event loop and mirrors the controller into the page's state after every change.
"""

import asyncio
import importlib.util
import tempfile
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

from trame_server.utils import asynchronous
from trame_slicer.core import LayoutManager, SlicerApp
from trame_slicer.rca_view import register_rca_factories
from trame_slicer.segmentation import SegmentationEffectErase, SegmentationEffectNoTool, SegmentationEffectPaint
from trame_slicer.views import Layout, LayoutDirection, ViewLayoutDefinition

from ..errors import InputError
from ..slicer import cases, gui, panel
from ..slicer.controller import Inputs, SegmentationController
from ..slicer.feedback import error_text
from . import segments, trace, volumes
from .config import StationConfig

IMAGE_QUALITY = 85
"""JPEG quality of every streamed frame. trame-rca sends a quality-50 frame and, ~170 ms later, renders and encodes
the view again at quality 90; one quality renders each change once (on 2 cores the second render of four views
took the CPU from the next click)."""
POLL_S = 0.005
"""Pause between two polls of the controller while it is busy (seconds): a finished click is written to the
scene at most this late; the worker holds no lock the loop needs meanwhile."""
LAYOUT = "SAM-Med3D"
BRUSHES = {"paint": SegmentationEffectPaint, "erase": SegmentationEffectErase}
WINDOW_LEVEL = {  # (window, level) in the volume's units; "auto": Slicer's automatic window/level
    "auto": None,
    "CT soft tissue": (400.0, 40.0),
    "CT bone": (1800.0, 400.0),
    "CT lung": (1500.0, -600.0),
    "CT brain": (80.0, 40.0),
}


class Selection:
    """The nodes the page selects, under the module parameter node's attribute names (``panel`` reads them)."""

    def __init__(self) -> None:
        self.inputVolume: Any = None
        self.segmentation: Any = None
        self.segmentId = ""
        self.positivePoints: Any = None
        self.negativePoints: Any = None

    def inputs(self) -> Inputs:
        return Inputs(self.inputVolume, self.segmentation, self.segmentId, self.positivePoints, self.negativePoints)


def four_views() -> Layout:
    """Axial (large, left), and the 3-D, sagittal and coronal views stacked on the right."""
    right = Layout(LayoutDirection.Vertical, [ViewLayoutDefinition.threed_view(), ViewLayoutDefinition.sagittal_view(),
                                              ViewLayoutDefinition.coronal_view()])  # fmt: skip
    return Layout(LayoutDirection.Horizontal, [ViewLayoutDefinition.axial_view(), right], flex_sizes=["3", "1"])


def tune_view(view: Any, quality: int) -> None:
    """Render ``view`` without multisampling and stream its frames at one JPEG quality (see
    :data:`IMAGE_QUALITY`). trame-slicer asks for 8x multisampling, which Mesa's llvmpipe computes on the CPU for
    every pixel (the axial view took ~100 ms a frame on 2 cores); slice views are images and gain nothing from
    it. trame-slicer keeps the view's trame-rca scheduler in its render strategy without a public accessor; a
    version without it keeps its default quality."""
    view.render_window().SetMultiSamples(0)
    scheduler = getattr(getattr(view, "_scheduled_render", None), "_scheduler", None)
    if hasattr(scheduler, "update_quality"):
        scheduler.update_quality(quality, quality)


class Station:
    """See the module docstring. ``model``: an already-built network (tests, benchmarks) instead of ``weights``."""

    def __init__(self, server, config: StationConfig, model: Any = None) -> None:
        self.server, self.state, self.config = server, server.state, config
        tracing = trace.install()
        self.slicer = SlicerApp()
        register_rca_factories(self.slicer.view_manager, server, target_fps=config.target_fps,
                               blur_fps=config.blur_fps)
        self.layout = LayoutManager(self.slicer.scene, self.slicer.view_manager, server)
        self.layout.register_layout(LAYOUT, four_views())
        self.layout.set_layout(LAYOUT)
        for view in self.slicer.view_manager.get_views():
            tune_view(view, IMAGE_QUALITY)
            trace.name_view(view, view.get_singleton_tag())
        if tracing:
            asynchronous.create_task(trace.watch_loop())
        self.selection = Selection()
        self.controller = SegmentationController()
        gui.connect(self.controller, self)
        self.controller.set_options(model=config.weights, device=config.device, precision=config.precision,
                                    server_url=config.server_url, server_token=config.server_token)  # fmt: skip
        if model is not None:
            self.controller.set_model("stand-in network", model)
        self._uploads = tempfile.TemporaryDirectory(prefix="sammed3d-web-")
        self._polling: Optional[asyncio.Task] = None
        self._shown_status = ""
        self.on_close: List[Callable[[], None]] = []  # e.g. the worklist gives the open case's lock back
        self.state.update({"message": "", "message_error": False, "status": "", "busy": False, "placing": 0,
                           "can_undo": False, "can_redo": False, "clicks": 0, "segments": [], "segment_id": "",
                           "brush": "none", "volume_name": "", "download": -1.0, "running_s": 0.0,
                           "device_note": self.controller.device_note(),
                           "options": self._options_state()})  # fmt: skip

    # --- the controller's GUI (SAMMed3DLib.slicer.gui.Gui) ---------------------------------------------------

    def show_message(self, text: str, is_error: bool) -> None:
        self._shown_status = self.controller.status
        with self.state:
            self.state.message, self.state.message_error = text, is_error

    def place_mode_changed(self) -> None:
        self.refresh()

    def work_queued(self) -> None:
        if self._polling is None or self._polling.done():
            self._polling = asynchronous.create_task(self._poll())

    def dependencies_ready(self) -> bool:
        if self.controller.uses_server or importlib.util.find_spec("torch") is not None:
            return True
        self.show_message("PyTorch is not installed on this station: choose the team server as the device", True)
        return False

    async def _poll(self) -> None:
        while True:
            busy = self.controller.poll(0.0)
            self.refresh()
            if not busy:
                return
            await asyncio.sleep(POLL_S)

    # --- page state -----------------------------------------------------------------------------------------

    def refresh(self) -> None:
        """Mirror the controller and the selection into the page's state (one message to the browser)."""
        c = self.controller
        with self.state:
            self.state.busy = c.busy
            self.state.running_s = round(c.running_for(), 1)
            self.state.placing = {True: 1, False: -1, None: 0}[c.placing]
            self.state.can_undo, self.state.can_redo = c.can_undo, c.can_redo
            self.state.clicks = len(getattr(c.last_step, "clicks", None) or ()) if c.can_undo else 0
            trace.event("state-clicks", self.state.clicks)
            self.state.segments = segments.rows(self.selection.segmentation)
            self.state.segment_id = self.selection.segmentId
            progress = c.download_progress
            self.state.download = -1.0 if progress is None else round(100 * (progress.fraction or 0.0), 1)
            if c.status and c.status != self._shown_status:  # a newer message stays until the next status
                self._shown_status = c.status
                self.state.status, self.state.message = c.status, ""

    def _options_state(self) -> Dict[str, Any]:
        o = self.controller.options
        return {"protect_others": o.protect_others, "start_from_existing": o.start_from_existing,
                "auto_extend": o.auto_extend, "device": o.device, "bf16": o.precision == "bf16",
                "server_url": o.server_url}  # fmt: skip

    def guarded(self, action: Callable[..., Any]) -> Callable[..., Any]:
        """``action`` as a page handler: any failure becomes one line on the page, never a traceback."""

        def handler(*args: Any, **kwargs: Any) -> Any:
            try:
                return action(*args, **kwargs)
            except Exception as exc:  # noqa: BLE001 - the page shows one line; the station keeps running
                self.show_message(error_text(exc), True)
            finally:
                self.refresh()

        handler.__name__ = getattr(action, "__name__", "handler")
        return handler

    # --- the case in the scene ------------------------------------------------------------------------------

    def open_volume(self, path: Path, name: Optional[str] = None) -> None:
        """Load ``path`` as this session's case: the previous case's nodes go, a segmentation with one segment
        comes, the views show the volume."""
        nodes = self.slicer.io_manager.load_volumes([str(path)])
        if not nodes:
            raise InputError(f"{Path(path).name}: not a volume Slicer can read")
        self.show_case(nodes[0], None, name or Path(path).name)

    def show_case(self, volume, segmentation, name: str, segment_id: str = "") -> None:
        """Make ``volume`` (and ``segmentation``, or a new one) the case the page works on, ``segment_id`` (or the
        first segment) selected; the previous case's nodes leave the scene and the controller forgets them."""
        self.stop_tools()
        scene = self.slicer.scene
        previous = [n for n in (self.selection.inputVolume, self.selection.segmentation) if n not in (None, volume,
                                                                                                      segmentation)]
        self.controller.forget_nodes(*previous)
        cases.remove_nodes(scene, *previous)
        self.selection.inputVolume, self.selection.segmentation = volume, segmentation
        self.selection.segmentId = segment_id
        panel.ensure_defaults(scene, self.selection)
        if segmentation is None:
            self.selection.segmentation = self.slicer.segmentation_editor.create_empty_segmentation_node()
            self.selection.segmentation.SetName(f"{name} segmentation")
        self.slicer.segmentation_editor.set_surface_representation_enabled(False)
        existing = segments.rows(self.selection.segmentation)
        if not existing:
            panel.add_segment(scene, self.selection)
        elif self.selection.segmentId not in {row["id"] for row in existing}:
            self.selection.segmentId = existing[0]["id"]
        display = self.slicer.display_manager
        display.show_volume_in_slice_background(volume)
        display.set_node_visible_in_group(volume)
        for view in self.slicer.view_manager.get_slice_views():
            view.set_visible_in_3d(True)
        display.reset_views()
        for view in self.slicer.view_manager.get_threed_views():  # the three planes at an angle, not edge-on
            camera = view.renderer().GetActiveCamera()
            camera.Azimuth(40)
            camera.Elevation(25)
            view.renderer().ResetCameraClippingRange()
            view.schedule_render()
        self._select()
        self.controller.enter(scene)
        with self.state:
            self.state.volume_name = name
            self.state.status, self.state.message = "", ""

    def _select(self) -> None:
        """The selection to the controller and to trame-slicer's editor (the brushes paint the same segment)."""
        self.controller.set_inputs(self.selection.inputs())
        editor = self.slicer.segmentation_editor
        if self.selection.segmentation is not None:
            if editor.active_segmentation_node is not self.selection.segmentation:
                editor.set_active_segmentation(self.selection.segmentation, self.selection.inputVolume)
            editor.set_active_segment_id(self.selection.segmentId)

    def require_case(self) -> None:
        if self.selection.inputVolume is None:
            raise InputError("open a case first")

    # --- what the page's controls call ----------------------------------------------------------------------

    def place(self, positive: bool) -> None:
        """+ point / − point (A / S): toggle place mode into that list; the brushes stop."""
        self.require_case()
        if self.controller.placing is positive:
            self.controller.stop_placing()
        else:
            self.stop_brush()
            self.controller.start_placing(positive)

    def stop_tools(self) -> None:
        self.controller.stop_placing()
        self.stop_brush()

    def brush(self, kind: str) -> None:
        """``paint`` or ``erase`` on the selected segment with trame-slicer's segmentation editor; ``none``."""
        if kind not in BRUSHES:
            self.stop_brush()
            return
        self.require_case()
        self.controller.stop_placing()
        self.slicer.segmentation_editor.set_active_effect_type(BRUSHES[kind])
        self.state.brush = kind

    def stop_brush(self) -> None:
        editor = self.slicer.segmentation_editor
        if editor.active_segmentation_node is not None:
            editor.set_active_effect_type(SegmentationEffectNoTool)
        self.state.brush = "none"

    def add_segment(self) -> None:
        self.require_case()
        panel.add_segment(self.slicer.scene, self.selection)
        self._select()

    def select_segment(self, segment_id: str) -> None:
        if segment_id not in {row["id"] for row in segments.rows(self.selection.segmentation)}:
            raise InputError(f"no segment {segment_id!r} in this case")
        self.selection.segmentId = segment_id
        self._select()

    def rename_segment(self, segment_id: str, name: str) -> None:
        segments.rename(self.selection.segmentation, segment_id, name)

    def recolour_segment(self, segment_id: str, colour: str) -> None:
        segments.recolour(self.selection.segmentation, segment_id, colour)

    def delete_segment(self, segment_id: str) -> None:
        if self.controller.busy:
            raise InputError("wait for the click in progress before deleting a segment")
        self.controller.finish()  # the deleted segment's clicks and history go with it
        segments.remove(self.selection.segmentation, segment_id)
        rows = segments.rows(self.selection.segmentation)
        if segment_id == self.selection.segmentId:
            self.selection.segmentId = rows[0]["id"] if rows else ""
            self._select()

    def set_option(self, name: str, value: Any) -> None:
        """One of the module's options from the page (unknown names are refused)."""
        changes = {"protect_others": bool, "start_from_existing": bool, "auto_extend": bool, "device": str,
                   "server_url": str, "server_token": str}  # fmt: skip
        if name == "bf16":
            self.controller.set_options(precision="bf16" if value else "fp32")
        elif name in changes:
            self.controller.set_options(**{name: changes[name](value)})
        else:
            raise InputError(f"unknown option {name!r}")
        self.state.options = self._options_state()  # the token never goes back to the page
        self.state.device_note = self.controller.device_note()

    def window_level(self, preset: str) -> None:
        self.require_case()
        if preset not in WINDOW_LEVEL:
            raise InputError(f"unknown window/level preset {preset!r}")
        display = self.selection.inputVolume.GetDisplayNode()
        if WINDOW_LEVEL[preset] is None:
            display.AutoWindowLevelOn()
        else:
            display.AutoWindowLevelOff()
            display.SetWindowLevel(*WINDOW_LEVEL[preset])

    def upload(self, files: Any) -> None:
        """The page's file input: one volume, checked (:func:`.volumes.save_upload`), opened as the case."""
        files = files if isinstance(files, list) else [files]
        if len(files) != 1:
            raise InputError("upload one volume file at a time")
        path = volumes.save_upload(files[0], Path(self._uploads.name), int(self.config.max_upload_mb * 2**20))
        self.open_volume(path)

    def open_sample(self) -> None:
        self.open_volume(volumes.sample_volume(), volumes.SAMPLE_NAME)

    def download(self) -> None:
        self.controller.download()

    def close(self) -> None:
        for hook in self.on_close:
            hook()
        self.controller.cleanup()
        self._uploads.cleanup()

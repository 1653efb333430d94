"""The worklist's desk over one MRML scene: open a case, save it, go to the next (both GUIs use it).

:class:`CaseDesk` joins a :class:`~SAMMed3DLib.worklist.Worklist` (the folder, states and locks) to a scene and
the module's controller. Opening a case claims its lock, closes the previous case's nodes and loads the image
as a volume and ``NAME.seg.nrrd`` (when present) as a segmentation, with Slicer's own readers. Saving writes
``NAME.seg.nrrd`` with Slicer's segmentation writer (segment names, colours, IDs and extents as Slicer keeps
them; the volume's full grid) and ``NAME.prompts.mrk.json`` (:mod:`SAMMed3DLib.prompts`: each segment's
clicks, as the controller recorded them), plus the case's state record, through the engine's staged outputs
(:mod:`SAMMed3DLib.staging`): both files are read back and checked before they replace anything, and a
failed save changes no file, no node and no state.

A GUI shows :meth:`CaseDesk.cases` (or :meth:`CaseDesk.summary`, as JSON values), calls :meth:`open` /
:meth:`next` / :meth:`save` / :meth:`save_and_next` / :meth:`close`, and :meth:`heartbeat` every
:data:`~SAMMed3DLib.worklist.HEARTBEAT_S` seconds while a case is open. Each returns or raises one
``InputError`` whose text is the message to show. Opening another case while the open one has unsaved changes
raises :class:`UnsavedChangesError` unless ``discard=True``.

Main thread only; the controller must be idle (no click running) to open, save or close.
"""

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import SimpleITK as sitk
import slicer

from ..errors import InputError
from ..prompts import SegmentPrompts, prompts_text, read_prompts
from ..rawfiles import check_nifti_data, is_nifti
from ..staging import StagedOutputs, write_text
from ..worklist import DONE, IN_PROGRESS, Case, CaseLock, Worklist, case_line, counts_line
from . import mrml
from .targets import SegmentClicks


class UnsavedChangesError(InputError):
    """The open case has changes that are not saved; open another with ``discard=True`` to drop them."""


@dataclass
class OpenCase:
    """The case on the desk and its nodes (the GUI selects them: volume, segmentation, first segment)."""

    case: Case
    lock: CaseLock
    volume: Any  # vtkMRMLScalarVolumeNode
    segmentation: Any  # vtkMRMLSegmentationNode
    loaded: Dict[str, SegmentPrompts]  # segment ID → the clicks read from the case's prompts file
    saved: Tuple = ()  # the segments' and clicks' fingerprint when loaded or last saved

    @property
    def segment_id(self) -> str:
        """The first segment's ID ("" if none)."""
        ids = self.segmentation.GetSegmentation().GetSegmentIDs()
        return ids[0] if ids else ""


class CaseDesk:
    """One scene's open case (see the module docstring). ``controller``: the module's
    :class:`~SAMMed3DLib.slicer.controller.SegmentationController` (its ``busy``, ``segment_clicks`` and
    ``forget_nodes``)."""

    def __init__(self, scene, controller, worklist: Worklist) -> None:
        self.scene, self.controller, self.worklist = scene, controller, worklist
        self.open_case: Optional[OpenCase] = None

    # --- what the GUIs call ---------------------------------------------------------------------------------

    def cases(self) -> List[Case]:
        """The worklist as it is now (states, counts, busy)."""
        return self.worklist.cases()

    def summary(self) -> Dict[str, Any]:
        """The worklist as plain JSON values, for a page: every case (:meth:`Case.summary` plus its list line),
        the open case's name (None), whether it has unsaved changes, and the counts line."""
        cases = self.cases()
        current = self.current.name if self.current else None
        rows = [{**case.summary(), "line": case_line(case), "open": case.name == current} for case in cases]
        return {"cases": rows, "current": current, "modified": self.modified, "counts": counts_line(cases)}

    @property
    def current(self) -> Optional[Case]:
        return self.open_case.case if self.open_case is not None else None

    @property
    def modified(self) -> bool:
        """The open case's segments changed since it was loaded or saved."""
        return self.open_case is not None and self._fingerprint(self.open_case.segmentation) != self.open_case.saved

    def open(self, name: str, discard: bool = False) -> OpenCase:
        """Claim case ``name``, close the open case, load the new one into the scene. InputError (nothing
        changes) if the case is unknown or busy, a click is running, the open case has unsaved changes
        (:class:`UnsavedChangesError`, unless ``discard``) or the files cannot be read."""
        self._check_idle()
        if self.open_case is not None and self.open_case.case.name == name and self._in_scene(self.open_case):
            return self.open_case
        if self.modified and not discard:
            raise UnsavedChangesError(f"{self.open_case.case.name} has unsaved changes: save it, or discard them.")
        lock = self.worklist.claim(name)
        try:
            case = self.worklist.case(name)
            volume, segmentation, loaded = self._load(case)
        except BaseException:
            lock.release()
            raise
        if self.open_case is not None:  # the same case again (its nodes left the scene) keeps its lock
            self._put_away(self.open_case, release=self.open_case.case.name != name)
        self.open_case = OpenCase(case, lock, volume, segmentation, loaded, self._fingerprint(segmentation))
        return self.open_case

    def next(self, discard: bool = False) -> Optional[OpenCase]:
        """Open the next case to do (after the open one); None, with the open case kept, when none is left."""
        after = self.current.name if self.current else None
        for _ in range(3):  # a colleague may claim the chosen case first: take the next one then
            case = self.worklist.next_to_do(after)
            if case is None:
                return None
            try:
                return self.open(case.name, discard)
            except UnsavedChangesError:
                raise
            except InputError:
                if not self.worklist.case(case.name).busy:
                    raise
                after = case.name
        return None

    def save(self, done: bool = False) -> Case:
        """Write the open case's segmentation, prompts and state (``done``: finished, else in progress), all or
        nothing. Returns the case as saved."""
        self._check_idle()
        opened = self._require_open()
        if not self._in_scene(opened):
            raise InputError(f"The image or segmentation of {opened.case.name} was removed from the scene; open the "
                             "case again to go on.")  # fmt: skip
        opened.lock.ensure()
        self.worklist.recover()  # a save of this case killed half way (this session's, before a crash) first
        prompts = self.prompts()
        segments = opened.segmentation.GetSegmentation().GetNumberOfSegments()
        clicks = sum(len(p.clicks) for p in prompts)
        record = self.worklist.record_text(DONE if done else IN_PROGRESS, segments, clicks)
        geometry = mrml.volume_geometry(opened.volume)
        segmentation = opened.segmentation
        with StagedOutputs(protected=[opened.case.image]) as outputs:
            outputs.stage(opened.case.segmentation, lambda path: write_segmentation(segmentation, geometry, path))
            outputs.stage(opened.case.prompts, lambda path: write_prompts(prompts, path))
            outputs.stage(self.worklist.record_path(opened.case.name), lambda path: write_text(record, path))
        opened.saved = self._fingerprint(opened.segmentation)
        opened.case = self.worklist.case(opened.case.name)
        return opened.case

    def save_and_next(self) -> Optional[OpenCase]:
        """Save the open case as done, then open the next case to do (None when none is left: the saved case
        stays open)."""
        self.save(done=True)
        return self.next()

    def close(self, discard: bool = False) -> None:
        """Remove the open case's nodes from the scene and give its lock back (UnsavedChangesError unless saved or
        ``discard``)."""
        if self.open_case is None:
            return
        self._check_idle()
        if self.modified and not discard:
            raise UnsavedChangesError(f"{self.open_case.case.name} has unsaved changes: save it, or discard them.")
        self._put_away(self.open_case, release=True)

    def _put_away(self, opened: OpenCase, release: bool) -> None:
        """The case's nodes out of the scene and out of the controller; its lock given back if ``release``."""
        self.open_case = None
        self.controller.forget_nodes(opened.volume, opened.segmentation)
        remove_nodes(self.scene, opened.segmentation, opened.volume)
        if release:
            opened.lock.release()

    def heartbeat(self) -> bool:
        """Keep the open case's lock alive; False if it was lost (the GUI says so; Save takes it back if free)."""
        return self.open_case is None or self.open_case.lock.heartbeat()

    def prompts(self) -> List[SegmentPrompts]:
        """Each segment's clicks, in segment order: the controller's record, after the clicks loaded from the
        case's prompts file when its sessions continued from the loaded segment."""
        opened = self._require_open()
        recorded = self.controller.segment_clicks(opened.segmentation)
        segmentation = opened.segmentation.GetSegmentation()
        prompts = []
        for segment_id in segmentation.GetSegmentIDs():
            segment = segmentation.GetSegment(segment_id)
            clicks = _merged(opened.loaded.get(segment_id), recorded.get(segment_id))
            prompts.append(SegmentPrompts(segment.GetName(), clicks.clicks, tuple(segment.GetColor()), segment_id,
                                          clicks.from_mask))  # fmt: skip
        return prompts

    def _fingerprint(self, segmentation) -> Tuple:
        """What a save keeps: the segments (:func:`fingerprint`) and their clicks."""
        return fingerprint(segmentation), tuple(sorted(self.controller.segment_clicks(segmentation).items()))

    # --- loading --------------------------------------------------------------------------------------------

    def _check_idle(self) -> None:
        if self.controller.busy:
            raise InputError("A click is still running; try again when it has finished.")

    def _in_scene(self, opened: OpenCase) -> bool:
        return self.scene.IsNodePresent(opened.volume) and self.scene.IsNodePresent(opened.segmentation)

    def _require_open(self) -> OpenCase:
        if self.open_case is None:
            raise InputError("No case is open.")
        return self.open_case

    def _load(self, case: Case) -> Tuple[Any, Any, Dict[str, SegmentPrompts]]:
        """The case's volume and segmentation nodes (added to the scene) and its loaded prompts by segment ID;
        on failure nothing is left in the scene."""
        added: List[Any] = []
        try:
            volume = read_volume(self.scene, case.image, case.name)
            added.append(volume)
            if case.has_segmentation:
                segmentation = read_segmentation(self.scene, case.segmentation, f"{case.name} segmentation")
            else:
                segmentation = mrml.new_segmentation(self.scene, volume)
                segmentation.SetName(f"{case.name} segmentation")
            added.append(segmentation)
            if not segmentation.GetSegmentation().GetNumberOfSegments():
                mrml.add_empty_segment(segmentation)  # a segment to click into right away
            mrml.prepare_segmentation(segmentation, mrml.volume_geometry(volume), case.name)
            loaded = _loaded_prompts(case, segmentation)
        except BaseException:
            remove_nodes(self.scene, *added)
            raise
        return volume, segmentation, loaded


def _merged(loaded: Optional[SegmentPrompts], recorded: Optional[SegmentClicks]) -> SegmentClicks:
    """A segment's clicks to save: the controller's record; when its first session continued from content the
    record did not make, the clicks loaded with the case (if any) come first."""
    if recorded is None:
        return SegmentClicks(loaded.clicks, loaded.from_mask) if loaded else SegmentClicks()
    if recorded.from_mask and loaded is not None:
        return SegmentClicks(loaded.clicks + recorded.clicks, loaded.from_mask)
    return recorded


def _loaded_prompts(case: Case, segmentation) -> Dict[str, SegmentPrompts]:
    """The case's prompts file by segment ID (matched by ID, else by name); {} when there is none."""
    if not case.prompts.is_file():
        return {}
    segments = segmentation.GetSegmentation()
    ids = list(segments.GetSegmentIDs())
    by_name = {segments.GetSegment(i).GetName(): i for i in ids}
    try:
        recorded = read_prompts(case.prompts)
    except InputError as exc:  # Save would replace it with the new clicks only: the user decides
        raise InputError(f"{exc}; move it aside to open {case.name} without its recorded clicks") from exc
    found = {}
    for prompts in recorded:
        segment_id = prompts.segment_id if prompts.segment_id in ids else by_name.get(prompts.name)
        if segment_id is not None:
            found[segment_id] = prompts
    return found


def remove_nodes(scene, *nodes) -> None:
    """Remove these nodes from ``scene`` with their display and storage nodes (those of a node the user or
    another module already removed are left alone)."""
    for node in nodes:
        if node is None or not scene.IsNodePresent(node):
            continue
        helpers = [node.GetNthDisplayNode(i) for i in range(node.GetNumberOfDisplayNodes())] + [node.GetStorageNode()]
        scene.RemoveNode(node)
        for helper in helpers:
            if helper is not None and scene.IsNodePresent(helper):
                scene.RemoveNode(helper)


# --- files ------------------------------------------------------------------------------------------------


def read_volume(scene, path: Path, name: str):
    """A scalar volume node in ``scene`` read from ``path`` by Slicer's volume reader (a file, or the first file
    of a DICOM series folder: Slicer reads the series); InputError if it cannot be read."""
    if is_nifti(path):  # ITK (and so Slicer) reads a cut-off NIfTI's missing voxels as zeros, NaN as 0
        check_nifti_data(path)
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
    storage = scene.AddNewNodeByClass("vtkMRMLVolumeArchetypeStorageNode")
    first = _first_file(path) if path.is_dir() else path
    storage.SetFileName(str(first))
    storage.SetSingleFile(not path.is_dir())
    if not storage.ReadData(node) or node.GetImageData() is None:
        scene.RemoveNode(storage)
        scene.RemoveNode(node)
        raise InputError(f"{path.name} is not an image Slicer can read")
    node.SetAndObserveStorageNodeID(storage.GetID())
    node.CreateDefaultDisplayNodes()
    return node


def _first_file(folder: Path) -> Path:
    return next(p for p in sorted(folder.iterdir()) if p.is_file() and not p.name.startswith("."))


def read_segmentation(scene, path: Path, name: str):
    """A segmentation node in ``scene`` read from a ``.seg.nrrd`` by Slicer's segmentation reader."""
    node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", name)
    if not _read_segmentation_file(node, path):
        scene.RemoveNode(node)
        raise InputError(f"{path.name} is not a segmentation Slicer can read")
    node.CreateDefaultDisplayNodes()
    return node


def _read_segmentation_file(node, path: Path) -> bool:
    """Read a ``.seg.nrrd`` into ``node``; False if it cannot be read. The file is read by ITK first: Slicer's
    NRRD reader aborts the whole process on a damaged or incomplete file (a cut-off copy, a full disk)."""
    try:
        sitk.ReadImage(str(path))
    except RuntimeError:
        return False
    storage = slicer.vtkMRMLSegmentationStorageNode()
    storage.SetFileName(str(path))
    return bool(storage.ReadData(node))


def write_segmentation(segmentation, geometry: mrml.VolumeGeometry, path: Path) -> None:
    """Write ``segmentation`` as a ``.seg.nrrd`` at ``path`` with Slicer's writer (on the volume's full grid),
    then read it back and check every segment's ID, name, colour and voxels; InputError if anything differs."""
    storage = slicer.vtkMRMLSegmentationStorageNode()
    storage.SetFileName(str(path))
    storage.SetCropToMinimumExtent(False)
    if not storage.WriteData(segmentation):
        raise InputError(f"cannot write {path}")
    written = slicer.vtkMRMLSegmentationNode()
    if not _read_segmentation_file(written, path):
        raise InputError(f"cannot write {path}: the file on disk cannot be read back (disk full?)")
    if describe(written, geometry) != describe(segmentation, geometry):
        raise InputError(f"cannot write {path}: the file on disk differs from the segmentation")


def describe(segmentation, geometry: mrml.VolumeGeometry) -> List[Tuple]:
    """(ID, name, colour as written, voxel bytes) of every segment on ``geometry``: what a saved file must keep."""
    described = []
    for segment_id in segmentation.GetSegmentation().GetSegmentIDs():
        segment = segmentation.GetSegmentation().GetSegment(segment_id)
        voxels = mrml.whole_segment(segmentation, segment_id, geometry)
        colour = tuple(colour_as_written(c) for c in segment.GetColor())
        described.append((segment_id, segment.GetName(), colour, np.packbits(voxels).tobytes()))
    return described


def colour_as_written(component: float) -> float:
    """A colour component (0-1) as a ``.seg.nrrd`` keeps it: Slicer's writer prints 6 significant digits. Comparing
    at any other precision (4 decimals, say) fails whenever a component sits on that precision's rounding edge,
    as the random colours Slicer gives new segments sometimes do."""
    return float(f"{component:.6g}")


def write_prompts(prompts: List[SegmentPrompts], path: Path) -> None:
    """Write the prompts file at ``path`` and check that it reads back as the same clicks."""
    write_text(prompts_text(prompts), path)
    if read_prompts(path) != [_rounded(p) for p in prompts]:
        raise InputError(f"cannot write {path}: the file on disk differs from the clicks")


def _rounded(prompts: SegmentPrompts) -> SegmentPrompts:
    """``prompts`` as they read back (RAS → LPS → RAS is exact; colours are floats either way)."""
    return SegmentPrompts(prompts.name, tuple((tuple(float(v) for v in p), bool(s)) for p, s in prompts.clicks),
                          tuple(float(c) for c in prompts.color), prompts.segment_id, prompts.from_mask)  # fmt: skip


def fingerprint(segmentation) -> Tuple:
    """Changes whenever a segment is added, removed, renamed, recoloured or edited (VTK modification times)."""
    segments = segmentation.GetSegmentation()
    stamps = []
    for segment_id in segments.GetSegmentIDs():
        segment = segments.GetSegment(segment_id)
        layer = segment.GetRepresentation(slicer.vtkSegmentationConverter.GetBinaryLabelmapRepresentationName())
        stamps.append((segment_id, segment.GetName(), segment.GetColor(), segment.GetMTime(),
                       layer.GetMTime() if layer is not None else 0))  # fmt: skip
    return tuple(stamps)

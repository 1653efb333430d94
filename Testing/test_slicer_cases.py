"""The worklist's desk on a real MRML scene (slicer-core) with real files: open a case, click, save both files
through the staged outputs, reload the .seg.nrrd in MRML, replay the prompts with segment-dataset, Save & next,
resume after a restart, busy cases, unsaved changes and a failed save that loses nothing."""

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from support.mainloop import under_main_loop  # noqa: F401 - the fixture, used by pytestmark
from support.phantoms import sphere_phantom, two_spheres_phantom
from support.standin import StandInModel

from SAMMed3DLib import InputError
from SAMMed3DLib.prompts import read_prompts
from SAMMed3DLib.slicer import markups, mrml
from SAMMed3DLib.slicer.cases import CaseDesk, UnsavedChangesError, read_segmentation
from SAMMed3DLib.slicer.controller import Inputs, SegmentationController
from SAMMed3DLib.slicer.scenario import scene_fingerprint
from SAMMed3DLib.worklist import DONE, IN_PROGRESS, RECORDS, TO_DO, Worklist

pytestmark = pytest.mark.usefixtures("under_main_loop")

SPHERE_A, SPHERE_B = (-60.0, -72.0, 72.0), (-120.0, -72.0, 72.0)  # RAS mm: two_spheres_phantom's centres


@pytest.fixture
def folder(tmp_path) -> Path:
    """A data folder: ``a`` (two spheres), ``b`` and ``c`` (one sphere each)."""
    folder = tmp_path / "data"
    folder.mkdir()
    sitk.WriteImage(two_spheres_phantom()[0], str(folder / "a.nii.gz"))
    one = sphere_phantom(size=(40, 40, 40), centre_ras=(-60.0, -60.0, 60.0))[0]
    sitk.WriteImage(one, str(folder / "b.nii.gz"))
    sitk.WriteImage(one, str(folder / "c.nrrd"))
    return folder


class Station:
    """One annotator's Slicer: a scene, the module's controller (stand-in network), the panel's point lists and a
    desk; ``select`` does what the panel does when the desk opened a case."""

    def __init__(self, app, folder: Path, owner: str) -> None:
        self.scene = app.scene
        self.controller = SegmentationController()
        self.controller.set_options(device="cpu")
        self.controller.set_model("stand-in", StandInModel())
        self.positive, self.negative = (markups.new_point_list(app.scene, n, c) for n, c in markups.POINT_LISTS)
        self.controller.enter(app.scene)
        self.desk = CaseDesk(app.scene, self.controller, Worklist(folder, owner))

    def select(self, segment_id: str = "") -> None:
        opened = self.desk.open_case
        inputs = Inputs(opened.volume, opened.segmentation, segment_id or opened.segment_id, self.positive,
                        self.negative)  # fmt: skip
        self.controller.set_inputs(inputs)
        self.controller.wait()

    def click(self, point_ras, positive: bool = True) -> None:
        (self.positive if positive else self.negative).AddControlPointWorld(*point_ras)
        self.controller.wait()
        assert self.controller.last_error is None, self.controller.last_error

    def new_segment(self, name: str, colour) -> str:
        segmentation = self.desk.open_case.segmentation
        segment_id = mrml.add_empty_segment(segmentation)
        segment = segmentation.GetSegmentation().GetSegment(segment_id)
        segment.SetName(name)
        segment.SetColor(*colour)
        self.select(segment_id)
        return segment_id

    def voxels(self, segment_id: str) -> np.ndarray:
        opened = self.desk.open_case
        return mrml.whole_segment(opened.segmentation, segment_id, mrml.volume_geometry(opened.volume))


@pytest.fixture
def station(app, folder):
    station = Station(app, folder, "ana")
    yield station
    station.controller.cleanup()


def label_two_spheres(station: Station) -> dict:
    """Open ``a``; segment sphere A (two positives, one negative) and sphere B; returns segment ID → name."""
    opened = station.desk.open("a")
    first = opened.segment_id
    opened.segmentation.GetSegmentation().GetSegment(first).SetName("sphere A")
    station.select(first)
    station.click(SPHERE_A)
    station.click(np.add(SPHERE_A, (0.0, 6.0, 0.0)))
    station.click(np.add(SPHERE_A, (30.0, 0.0, 0.0)), positive=False)
    second = station.new_segment("sphere B", (0.1, 0.8, 0.3))
    station.click(SPHERE_B)
    assert station.voxels(first).sum() > 100 and station.voxels(second).sum() > 100
    return {first: "sphere A", second: "sphere B"}


def test_open_loads_the_image_claims_the_case_and_gives_a_segment(station, folder, app):
    before = scene_fingerprint(app.scene)
    opened = station.desk.open("b")
    image = sitk.ReadImage(str(folder / "b.nii.gz"))
    geometry = mrml.volume_geometry(opened.volume)
    assert geometry.dims == image.GetSize()
    assert np.allclose(opened.volume.GetOrigin(), np.multiply(image.GetOrigin(), (-1, -1, 1)))
    assert opened.segmentation.GetSegmentation().GetNumberOfSegments() == 1 and opened.segment_id
    assert Worklist(folder, "ben").case("b").busy
    assert not station.desk.modified
    summary = station.desk.summary()
    assert summary["current"] == "b" and not summary["modified"] and summary["counts"].startswith("3 cases: 3 to do")
    assert [(row["name"], row["open"], row["line"]) for row in summary["cases"]][:2] == [
        ("a", False, "a \u2014 to do"), ("b", True, "b \u2014 to do")]
    json.dumps(summary)  # plain JSON values
    station.desk.close()
    assert scene_fingerprint(app.scene) == before  # no node of the case is left (display, storage nodes neither)
    assert not Worklist(folder, "ben").case("b").busy


def test_save_writes_a_slicer_segmentation_and_prompts_that_reload_and_replay(station, folder, tmp_path,
                                                                              monkeypatch, app):  # fmt: skip
    names = label_two_spheres(station)
    expected = {segment_id: station.voxels(segment_id) for segment_id in names}
    recorded = station.controller.segment_clicks(station.desk.open_case.segmentation)
    saved = station.desk.save()
    assert saved.state == IN_PROGRESS and saved.segments == 2 and saved.clicks == 4 and saved.saved_by == "ana"
    assert not station.desk.modified

    # the .seg.nrrd in a fresh MRML segmentation: same IDs, names, colours and voxels, on the image's grid
    reloaded = read_segmentation(app.scene, folder / "a.seg.nrrd", "reloaded")
    segments = reloaded.GetSegmentation()
    assert list(segments.GetSegmentIDs()) == list(names)
    geometry = mrml.volume_geometry(station.desk.open_case.volume)
    for segment_id, name in names.items():
        assert segments.GetSegment(segment_id).GetName() == name
        assert np.array_equal(mrml.whole_segment(reloaded, segment_id, geometry), expected[segment_id])
    assert np.allclose(segments.GetSegment(list(names)[1]).GetColor(), (0.1, 0.8, 0.3))
    header = (folder / "a.seg.nrrd").read_bytes()[:4000].decode("latin-1")
    assert "Segment1_Name:=sphere B" in header and "Segment0_Extent:=" in header

    # the prompts: each segment's clicks in order, as the controller recorded them
    prompts = read_prompts(folder / "a.prompts.mrk.json")
    assert [p.name for p in prompts] == ["sphere A", "sphere B"]
    assert [p.clicks for p in prompts] == [recorded[segment_id].clicks for segment_id in names]
    assert [s for _, s in prompts[0].clicks] == [True, True, False] and not prompts[0].from_mask

    # segment-dataset replays them to the same masks (the stand-in network in place of the checkpoint)
    from SAMMed3DLib import model as model_module
    from SAMMed3DLib.cli import main

    monkeypatch.setattr(model_module, "load_model", lambda *args, **kwargs: StandInModel())
    out = tmp_path / "replayed"
    command = ["segment-dataset", "--images", str(folder), "--prompts", str(folder), "--out", str(out),
               "--weights", "stand-in"]  # fmt: skip
    assert main(command) == 1  # b and c have no prompts: they fail on their own
    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "a.nii.gz")))
    for value, segment_id in enumerate(names, 1):
        assert np.array_equal(labels == value, expected[segment_id]), value
    report = json.loads((out / "segment-dataset-report.json").read_text())
    assert {c["case"]: c["status"] for c in report["cases"]} == {"a": "done", "b": "failed", "c": "failed"}
    assert "labels 1=sphere A, 2=sphere B" in report["cases"][0]["detail"]


def test_save_and_next_marks_done_and_a_restart_resumes(app, folder):
    first = Station(app, folder, "ana")
    names = label_two_spheres(first)
    opened = first.desk.save_and_next()
    assert opened.case.name == "b" and first.desk.worklist.case("a").state == DONE
    assert [c.state for c in first.desk.cases()] == [DONE, TO_DO, TO_DO]
    first.desk.close()
    first.controller.cleanup()

    restarted = Station(app, folder, "ana")  # a new session: nothing but the folder carries over
    assert restarted.desk.worklist.next_to_do().name == "b"
    reopened = restarted.desk.open("a")
    segments = reopened.segmentation.GetSegmentation()
    assert [segments.GetSegment(i).GetName() for i in segments.GetSegmentIDs()] == list(names.values())
    assert list(reopened.loaded) == list(names)
    # a further click on the loaded segment continues from it: the saved clicks are the loaded ones, then it
    restarted.controller.set_options(start_from_existing=True)
    restarted.select(list(names)[1])
    restarted.click(np.add(SPHERE_B, (0.0, 0.0, 6.0)))
    prompts = restarted.desk.prompts()
    assert len(prompts[1].clicks) == 2 and prompts[1].clicks[0] == reopened.loaded[list(names)[1]].clicks[0]
    assert len(prompts[0].clicks) == 3  # untouched: as loaded
    restarted.desk.save()
    assert restarted.desk.worklist.case("a").state == IN_PROGRESS
    restarted.controller.cleanup()


def test_finished_segments_keep_their_clicks(station, folder):
    """Finish forgets the session, not what made the segment: the prompts still hold its clicks."""
    station.desk.open("a")
    station.select()
    station.click(SPHERE_A)
    station.controller.finish()
    station.controller.wait()
    station.new_segment("B", (0.0, 0.0, 1.0))
    station.click(SPHERE_B)
    assert [len(p.clicks) for p in station.desk.prompts()] == [1, 1]


def test_the_clicks_follow_what_made_the_segment(station):
    """A new session that replaces a finished segment's content records its own clicks; reset (or a session
    whose clicks are all undone) leaves the segment, and its record, as before; one continuing from the segment
    adds its clicks to those before."""
    opened = station.desk.open("a")
    station.select()
    first = (tuple(map(float, SPHERE_A)), True)
    station.click(SPHERE_A)
    station.controller.finish()
    station.controller.wait()
    station.click(np.add(SPHERE_A, (0.0, 3.0, 0.0)))  # a fresh session: it replaces the segment's content
    assert station.desk.prompts()[0].clicks == (((SPHERE_A[0], SPHERE_A[1] + 3.0, SPHERE_A[2]), True),)
    station.controller.reset()
    station.controller.wait()
    assert station.desk.prompts()[0].clicks == (first,)  # the content is the first session's again
    station.controller.set_options(start_from_existing=True)
    station.click(np.add(SPHERE_A, (0.0, -3.0, 0.0)))
    clicks = station.desk.prompts()[0].clicks
    assert len(clicks) == 2 and clicks[0] == first and not station.desk.prompts()[0].from_mask
    station.controller.undo()
    station.controller.wait()
    assert station.desk.prompts()[0].clicks == (first,)
    assert opened.segment_id in station.controller.segment_clicks(opened.segmentation)


def test_a_case_open_elsewhere_is_busy_and_next_skips_it(app, station, folder):
    station.desk.open("a")
    other = Station(app, folder, "ben")
    with pytest.raises(InputError, match="a is open by ana"):
        other.desk.open("a")
    assert other.desk.current is None
    assert other.desk.next().case.name == "b"
    assert [c.busy for c in station.desk.cases()] == [False, True, False]
    other.controller.cleanup()


def test_unsaved_changes_are_never_dropped_silently(station, app):
    station.desk.open("b")
    station.select()
    station.click((-60.0, -60.0, 60.0))
    assert station.desk.modified
    before = scene_fingerprint(app.scene)
    with pytest.raises(UnsavedChangesError, match="b has unsaved changes"):
        station.desk.next()
    with pytest.raises(UnsavedChangesError):
        station.desk.close()
    assert scene_fingerprint(app.scene) == before and station.desk.current.name == "b"
    assert station.desk.next(discard=True).case.name == "c"  # the next after b


@pytest.mark.parametrize("name", ["../data/b", "/etc/passwd", "b.nii.gz", "", ".worklist"])
def test_bad_case_names_change_nothing(station, app, folder, name):
    station.desk.open("b")
    before = scene_fingerprint(app.scene)
    with pytest.raises(InputError):
        station.desk.open(name)
    assert scene_fingerprint(app.scene) == before and station.desk.current.name == "b"


def test_a_failed_save_loses_nothing(station, folder, app):
    """The prompts file cannot be replaced: no file changes (the segmentation neither), the state stays, the
    scene keeps the work and Save works once the file is writable again."""
    label_two_spheres(station)
    station.desk.save()
    files = {p: p.read_bytes() for p in (folder / "a.seg.nrrd", folder / "a.prompts.mrk.json",
                                         folder / RECORDS / "a.json")}  # fmt: skip
    station.click(np.add(SPHERE_B, (0.0, 0.0, 9.0)))
    (folder / "a.prompts.mrk.json").chmod(0o444)
    before = scene_fingerprint(app.scene)
    with pytest.raises(InputError, match="a.prompts.mrk.json is read-only; it is not replaced"):
        station.desk.save(done=True)
    assert {p: p.read_bytes() for p in files} == files
    assert not [p for p in folder.iterdir() if p.name.startswith(".sammed3d-")]
    assert station.desk.modified and scene_fingerprint(app.scene) == before
    assert station.desk.worklist.case("a").state == IN_PROGRESS
    (folder / "a.prompts.mrk.json").chmod(0o644)
    assert station.desk.save(done=True).state == DONE and not station.desk.modified


def test_a_colour_on_a_rounding_edge_saves(station, folder):
    """Slicer gives a new segment a random colour and its writer keeps 6 significant digits: a component such as
    0.2312499 (kept as 0.23125) must not fail the save's read-back check, whatever precision that check uses."""
    station.desk.open("b")
    station.select()
    segmentation = station.desk.open_case.segmentation
    segment_id = station.desk.open_case.segment_id
    edge = (0.2312499, 0.12344999, 0.6107)
    segmentation.GetSegmentation().GetSegment(segment_id).SetColor(*edge)
    station.click((-60.0, -60.0, 60.0))
    assert station.desk.save().clicks == 1
    saved = read_segmentation(station.scene, folder / "b.seg.nrrd", "saved")
    kept = saved.GetSegmentation().GetSegment(segment_id).GetColor()
    assert np.allclose(kept, edge, atol=1e-6) and kept != edge  # the file holds the colour to 6 digits


def test_a_damaged_segmentation_is_one_message_and_the_case_stays_closed(station, folder, app):
    (folder / "b.seg.nrrd").write_bytes(b"NRRD0004\ntype: unsigned char\n\ngarbage")
    before = scene_fingerprint(app.scene)
    with pytest.raises(InputError, match="b.seg.nrrd is not a segmentation Slicer can read"):
        station.desk.open("b")
    assert scene_fingerprint(app.scene) == before and station.desk.current is None
    assert not station.desk.worklist.case("b").busy


def write_dicom_series(image: sitk.Image, folder: Path) -> None:
    """``image`` (int16) as a CT series of one file per slice, as a scanner exports it."""
    folder.mkdir()
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    study = "1.2.826.0.1.3680043.2.1125.7"
    for k in range(image.GetDepth()):
        slice_ = image[:, :, k]
        origin = "\\".join(f"{v:.6f}" for v in image.TransformIndexToPhysicalPoint((0, 0, k)))
        direction = image.GetDirection()
        orientation = "\\".join(f"{v:.6f}" for v in (direction[0], direction[3], direction[6], direction[1],
                                                      direction[4], direction[7]))  # fmt: skip
        spacing = image.GetSpacing()
        for tag, value in (("0008|0060", "CT"), ("0020|000d", study), ("0020|000e", study + ".1"),
                           ("0020|0013", str(k + 1)), ("0020|0032", origin), ("0020|0037", orientation),
                           ("0028|0030", f"{spacing[1]}\\{spacing[0]}"), ("0018|0050", str(spacing[2]))):
            slice_.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"IM{k:04d}.dcm"))
        writer.Execute(slice_)


def test_a_dicom_series_folder_is_a_case_and_replays(station, folder, tmp_path, monkeypatch):
    """A folder holding one DICOM series is a case: Slicer reads the series, the segmentation is saved beside the
    folder, and segment-dataset replays its clicks on the series as read by ITK."""
    image = sitk.Cast(sphere_phantom(size=(40, 40, 24), centre_ras=(-60.0, -60.0, 60.0))[0], sitk.sitkInt16)
    write_dicom_series(image, folder / "series")
    opened = station.desk.open("series")
    geometry = mrml.volume_geometry(opened.volume)
    assert geometry.dims == image.GetSize()
    assert np.array_equal(sitk.GetArrayFromImage(mrml.volume_to_sitk(opened.volume, geometry)),
                          sitk.GetArrayFromImage(image))  # fmt: skip
    station.select()
    station.click((-60.0, -60.0, 60.0))
    expected = station.voxels(opened.segment_id)
    station.desk.save(done=True)
    assert (folder / "series.seg.nrrd").is_file() and (folder / "series.prompts.mrk.json").is_file()

    from SAMMed3DLib import model as model_module
    from SAMMed3DLib.cli import main

    monkeypatch.setattr(model_module, "load_model", lambda *args, **kwargs: StandInModel())
    out = tmp_path / "replayed"
    main(["segment-dataset", "--images", str(folder), "--prompts", str(folder), "--out", str(out),
          "--weights", "stand-in"])  # fmt: skip
    assert np.array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(out / "series.nii.gz"))) == 1, expected)


def test_a_case_whose_nodes_were_removed_is_not_saved_but_opens_again(station, app, folder):
    """The scene is the truth: another module removed the case's segmentation; Save says so and writes nothing,
    opening the case again loads it afresh."""
    opened = station.desk.open("b")
    app.scene.RemoveNode(opened.segmentation)
    with pytest.raises(InputError, match="segmentation of b was removed from the scene; open the case again"):
        station.desk.save()
    assert not (folder / "b.seg.nrrd").exists()
    again = station.desk.open("b", discard=True)
    assert again is not opened and app.scene.IsNodePresent(again.segmentation)
    assert Worklist(folder, "ben").case("b").busy  # still ours
    assert station.desk.save().state == IN_PROGRESS


def test_a_segmentation_without_segments_opens_with_one_to_click_into(station, folder):
    opened = station.desk.open("b")
    opened.segmentation.GetSegmentation().RemoveSegment(opened.segment_id)
    assert station.desk.save().segments == 0
    station.desk.close()
    assert station.desk.open("b").segmentation.GetSegmentation().GetNumberOfSegments() == 1
    assert not station.desk.modified


def test_a_damaged_prompts_file_is_one_message_and_is_kept(station, folder, app):
    (folder / "b.prompts.mrk.json").write_text("{not json")
    before = scene_fingerprint(app.scene)
    with pytest.raises(InputError, match="b.prompts.mrk.json is not a readable prompts file .*; move it aside"):
        station.desk.open("b")
    assert scene_fingerprint(app.scene) == before and (folder / "b.prompts.mrk.json").read_text() == "{not json"
    assert not station.desk.worklist.case("b").busy


def test_a_cut_off_nifti_is_one_message_not_an_image_of_zeros(station, folder, app):
    data = (folder / "b.nii.gz").read_bytes()
    (folder / "b.nii.gz").write_bytes(data[: len(data) // 2])
    before = scene_fingerprint(app.scene)
    with pytest.raises(InputError, match="b.nii.gz"):
        station.desk.open("b")
    assert scene_fingerprint(app.scene) == before and not station.desk.worklist.case("b").busy


def test_nothing_is_opened_or_saved_while_a_click_runs(station, folder):
    """A click still on the worker would land in a segmentation that is being saved or taken out of the scene."""
    station.desk.open("b")
    station.select()
    station.positive.AddControlPointWorld(-60.0, -60.0, 60.0)  # the click is queued, not finished
    assert station.controller.busy
    for action in (station.desk.save, station.desk.next, station.desk.close):
        with pytest.raises(InputError, match="A click is still running"):
            action()
    station.controller.wait()
    assert station.desk.save().clicks == 1 and not (folder / ".worklist" / "c.lock").exists()


def test_slicer_opens_the_prompts_file_as_one_point_list_per_segment(app, tmp_path):
    """What the README promises annotators: Slicer's own markups reader shows each segment's clicks."""
    from SAMMed3DLib.prompts import SegmentPrompts, prompts_text

    path = tmp_path / "a.prompts.mrk.json"
    path.write_text(prompts_text([
        SegmentPrompts("liver", (((1.0, 2.0, 3.0), True), ((4.0, -5.0, 6.0), False)), (0.8, 0.2, 0.1), "S1"),
        SegmentPrompts("tumour", (((7.0, 8.0, 9.0), True),), (0.0, 1.0, 0.0), "S2"),
    ]))  # fmt: skip
    assert app.logics["Markups"].LoadMarkups(str(path))
    lists = [app.scene.GetNthNodeByClass(i, "vtkMRMLMarkupsFiducialNode")
             for i in range(app.scene.GetNumberOfNodesByClass("vtkMRMLMarkupsFiducialNode"))]  # fmt: skip
    shown = {}
    for node in lists:
        points = []
        for i in range(node.GetNumberOfControlPoints()):
            position = [0.0, 0.0, 0.0]
            node.GetNthControlPointPositionWorld(i, position)
            points.append((node.GetNthControlPointLabel(i), node.GetNthControlPointDescription(i), tuple(position)))
        shown[node.GetName()] = (points, tuple(round(c, 3) for c in node.GetDisplayNode().GetSelectedColor()))
    assert shown == {
        "liver": ([("+1", "positive", (1.0, 2.0, 3.0)), ("-1", "negative", (4.0, -5.0, 6.0))], (0.8, 0.2, 0.1)),
        "tumour": ([("+1", "positive", (7.0, 8.0, 9.0))], (0.0, 1.0, 0.0)),
    }

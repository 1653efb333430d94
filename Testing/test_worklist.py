"""The worklist engine on real files: scanning a data folder, states, locks (busy, stale, crashed holders),
resuming with a new Worklist object, refused case names, and the prompts file format."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support.limits import commit_killed_at

from SAMMed3DLib import InputError
from SAMMed3DLib.prompts import SegmentPrompts, prompts_text, read_prompts
from SAMMed3DLib.worklist import DONE, IN_PROGRESS, RECORDS, STALE_AFTER_S, TO_DO, Worklist, case_line, counts_line


def data_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "data"
    folder.mkdir()
    for name in ("b_case.nii.gz", "a_case.nrrd", "c case.mha", "d.nii"):
        (folder / name).write_bytes(b"image")  # the worklist reads names only; the desk reads the images
    (folder / "a_case.seg.nrrd").write_bytes(
        b"NRRD0004\ntype: unsigned char\nSegment0_ID:=S1\nSegment0_Name:=liver\nSegment1_ID:=S2\n\n\x00\x01"
    )
    (folder / "notes.txt").write_text("not an image")
    (folder / ".hidden.nii.gz").write_bytes(b"x")
    series = folder / "e_series"
    series.mkdir()
    (series / "IM0001").write_bytes(b"\0" * 128 + b"DICM" + b"rest")
    (folder / "not_dicom").mkdir()
    (folder / "not_dicom" / "file").write_bytes(b"\0" * 200)
    return folder


def test_scan_finds_images_series_and_existing_segmentations(tmp_path):
    folder = data_folder(tmp_path)
    cases = Worklist(folder, "ana").cases()
    assert [c.name for c in cases] == ["a_case", "b_case", "c case", "d", "e_series"]
    first = cases[0]
    assert first.image == folder / "a_case.nrrd" and first.has_segmentation and first.segments == 2
    assert first.prompts == folder / "a_case.prompts.mrk.json" and first.state == TO_DO and not first.busy
    assert cases[4].image == folder / "e_series" and not cases[1].has_segmentation and cases[1].segments == 0


def test_states_resume_in_a_new_session(tmp_path):
    """State records live in the folder: a new Worklist (a restart, another annotator) sees them."""
    folder = data_folder(tmp_path)
    first = Worklist(folder, "ana")
    for name, state in (("a_case", DONE), ("b_case", IN_PROGRESS)):
        first.record_path(name).write_text(first.record_text(state, segments=2, clicks=5))
    restarted = Worklist(folder, "ben")
    by_name = {c.name: c for c in restarted.cases()}
    assert (by_name["a_case"].state, by_name["b_case"].state, by_name["d"].state) == (DONE, IN_PROGRESS, TO_DO)
    assert by_name["b_case"].clicks == 5 and by_name["b_case"].saved_by == "ana"
    assert restarted.next_to_do().name == "c case"
    assert restarted.next_to_do(after="d").name == "e_series"
    assert restarted.next_to_do(after="e_series").name == "c case"  # from the top again
    assert counts_line(restarted.cases()) == "5 cases: 3 to do, 1 in progress, 1 done"
    assert case_line(by_name["b_case"]) == "b_case \u2014 in progress \u00b7 2 segments \u00b7 5 clicks"


def test_a_claimed_case_is_busy_for_the_others_and_free_after_release(tmp_path):
    folder = data_folder(tmp_path)
    ana, ben = Worklist(folder, "ana"), Worklist(folder, "ben")
    lock = ana.claim("b_case")
    assert lock.held and not ana.case("b_case").busy  # not busy for its own session
    seen = ben.case("b_case")
    assert seen.busy and seen.holder == "ana" and case_line(seen) == "b_case \u2014 to do \u00b7 open by ana"
    assert counts_line(ben.cases()).endswith("(1 open elsewhere)")
    with pytest.raises(InputError, match="b_case is open by ana"):
        ben.claim("b_case")
    assert ben.next_to_do().name == "a_case" and ben.next_to_do(after="a_case").name == "c case"
    assert Worklist(folder, "ana").case("b_case").busy  # the same annotator in a second tab: another session
    assert ana.claim("b_case").held  # claiming again in the same session is fine
    lock.release()
    assert not lock.held and not ben.case("b_case").busy
    ben.claim("b_case")
    assert ana.case("b_case").busy


def test_a_stale_lock_is_taken_over_and_its_old_holder_knows(tmp_path):
    folder = data_folder(tmp_path)
    ana, ben = Worklist(folder, "ana"), Worklist(folder, "ben")
    lock = ana.claim("d")
    assert lock.heartbeat()
    old = time.time() - STALE_AFTER_S - 5
    os.utime(lock.path, (old, old))  # no heartbeat for longer than the stale time
    assert not ben.case("d").busy
    taken = ben.claim("d")
    assert taken.held and not lock.held
    assert not lock.heartbeat()  # the GUI tells its user
    with pytest.raises(InputError, match="d is open by ben"):
        lock.ensure()  # saving again needs the case back
    taken.release()
    lock.ensure()
    assert lock.held and ben.case("d").busy


def test_a_heartbeat_keeps_the_lock(tmp_path):
    folder = data_folder(tmp_path)
    ana, ben = Worklist(folder, "ana"), Worklist(folder, "ben", stale_after_s=1.0)
    lock = ana.claim("d")
    old = time.time() - 0.5
    os.utime(lock.path, (old, old))
    assert lock.heartbeat() and time.time() - lock.path.stat().st_mtime < 0.5
    assert ben.case("d").busy


def test_the_lock_of_a_crashed_process_is_free_at_once(tmp_path):
    """A process that claimed a case and died (on this machine) holds nothing, long before the stale time."""
    folder = data_folder(tmp_path)
    code = (
        "import sys; from SAMMed3DLib.worklist import Worklist\n"
        "Worklist(sys.argv[1], 'crashed').claim('d')\n"
        "import os; os._exit(9)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    subprocess.run([sys.executable, "-c", code, str(folder)], env=env, check=False)
    lock_file = folder / RECORDS / "d.lock"
    assert json.loads(lock_file.read_text())["owner"] == "crashed"
    ben = Worklist(folder, "ben")
    assert not ben.case("d").busy
    assert ben.claim("d").held


def test_racing_claims_give_the_case_to_one_session(tmp_path):
    folder = data_folder(tmp_path)
    code = (
        "import sys\nfrom SAMMed3DLib.worklist import Worklist\nfrom SAMMed3DLib import InputError\n"
        "w = Worklist(sys.argv[1], sys.argv[2])\n"
        "try:\n    w.claim('b_case'); print('won', flush=True)\nexcept InputError:\n    print('lost', flush=True)\n"
        "sys.stdin.read()\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    runs = [subprocess.Popen([sys.executable, "-c", code, str(folder), f"p{i}"], env=env, stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True) for i in range(4)]  # fmt: skip
    outcomes = [run.stdout.readline().strip() for run in runs]
    for run in runs:
        run.communicate("")
    assert sorted(outcomes) == ["lost", "lost", "lost", "won"]


@pytest.mark.parametrize("name", ["../data/d", "/etc/passwd", "..", ".", "", "a/b", "d\n", "x" * 300, 7, ".worklist"])
def test_names_that_are_not_cases_are_refused(tmp_path, name):
    folder = data_folder(tmp_path)
    worklist = Worklist(folder, "ana")
    with pytest.raises(InputError):
        worklist.claim(name)
    with pytest.raises(InputError):
        worklist.case(name)
    assert not (folder / RECORDS).exists() or not any((folder / RECORDS).iterdir())


def test_an_unknown_case_name_is_refused_with_the_folder(tmp_path):
    folder = data_folder(tmp_path)
    with pytest.raises(InputError, match=r"there is no case 'zz' in .*data"):
        Worklist(folder, "ana").claim("zz")
    with pytest.raises(InputError) as caught:
        Worklist(folder, "ana").case("z" * 10_000)
    assert len(str(caught.value)) < 200


def test_the_owner_shown_to_the_others_is_one_plain_line(tmp_path):
    folder = data_folder(tmp_path)
    Worklist(folder, "ana\n\x1b[31mred\t ").claim("d")
    assert Worklist(folder, "ben").case("d").holder == "ana [31mred"


@pytest.mark.parametrize("step, saved", [("planned", False), ("journal", True)])
def test_a_save_killed_half_way_is_finished_or_dropped_when_the_worklist_opens(tmp_path, step, saved):
    """A session killed while saving (after writing its journal: the save was decided) leaves staging folders;
    the next Worklist on the folder completes the save (or, undecided, drops it), so no half-saved case stays."""
    folder = data_folder(tmp_path)
    files = {folder / "d.seg.nrrd": "segmentation", folder / "d.prompts.mrk.json": "prompts"}
    assert commit_killed_at(step, files) == 9
    assert [p for p in folder.iterdir() if p.name.startswith(".sammed3d-")]
    Worklist(folder, "ana")
    assert not [p for p in folder.iterdir() if p.name.startswith(".sammed3d-")]
    assert all(path.exists() == saved for path in files)


def test_a_damaged_record_shows_the_case_as_to_do(tmp_path):
    folder = data_folder(tmp_path)
    worklist = Worklist(folder, "ana")
    worklist.record_path("d").write_text("{not json")
    assert worklist.case("d").state == TO_DO


def test_a_read_only_folder_is_one_message(tmp_path):
    folder = data_folder(tmp_path)
    folder.chmod(0o555)
    try:
        with pytest.raises(InputError, match="data is read-only: the worklist saves segmentations beside the images"):
            Worklist(folder, "ana")
    finally:
        folder.chmod(0o755)


def test_a_missing_folder_is_one_message(tmp_path):
    with pytest.raises(InputError, match="is not a folder"):
        Worklist(tmp_path / "nowhere", "ana")


# --- the prompts file ------------------------------------------------------------------------------------


def test_prompts_round_trip_in_order_with_signs_colours_and_ids(tmp_path):
    segments = [
        SegmentPrompts("liver", (((1.0, -2.5, 3.0), True), ((4.0, 5.0, -6.0), False), ((0.5, 0.0, 1.0), True)),
                       (0.8, 0.2, 0.1), "S_1"),
        SegmentPrompts("tumour", (((7.0, 8.0, 9.0), True),), (0.0, 1.0, 0.0), "S_2", from_mask=True),
    ]  # fmt: skip
    path = tmp_path / "a.prompts.mrk.json"
    path.write_text(prompts_text(segments))
    assert read_prompts(path) == segments
    document = json.loads(path.read_text())
    liver = document["markups"][0]
    assert liver["coordinateSystem"] == "LPS" and liver["controlPoints"][0]["position"] == [-1.0, 2.5, 3.0]
    assert [p["label"] for p in liver["controlPoints"]] == ["+1", "-1", "+2"]


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda d: d["markups"][0]["controlPoints"][0].pop("description"), "expected positive or negative"),
        (lambda d: d["markups"][0].update(name=""), "needs a 'name'"),
        (lambda d: d["markups"][0].update(coordinateSystem="IJK"), "unknown coordinateSystem"),
        (lambda d: d["markups"][0]["controlPoints"][0].update(position=[1, 2]), "three finite numbers"),
        (lambda d: d["sammed3d"]["segments"].append({}), "2 entries for 1 markups"),
        (lambda d: d["markups"][0]["display"].update(color=[2, 0, 0]), "three numbers from 0 to 1"),
    ],
)
def test_bad_prompts_files_are_one_message(tmp_path, change, message):
    document = json.loads(prompts_text([SegmentPrompts("liver", (((1.0, 2.0, 3.0), True),))]))
    change(document)
    path = tmp_path / "a.prompts.mrk.json"
    path.write_text(json.dumps(document))
    with pytest.raises(InputError, match=message):
        read_prompts(path)

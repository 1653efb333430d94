"""What each session step returns (StepResult), the bounded history with payloads, and the session's refusals:
a second thread's step while one runs, an empty focus, non-finite network output."""

import threading

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from support.phantoms import centre_ras, far_spheres_phantom, sphere_phantom, two_spheres_phantom
from support.session_state import snapshot
from support.standin import StandInModel

from SAMMed3DLib import InputError, InteractiveSession, SAMMed3DError
from SAMMed3DLib.errors import NetworkOutputError, SessionBusyError
from SAMMed3DLib.history import History


def arr(image: sitk.Image) -> np.ndarray:
    return sitk.GetArrayFromImage(image)


def test_each_result_reports_its_own_step():
    """changed bounds every voxel that changed, encoded is true exactly when the encoder ran, clicks and mask
    are the session's after the step, timings cover the phases."""
    image, a, b = far_spheres_phantom()
    model = StandInModel()
    session = InteractiveSession(model, image)
    previous = arr(session.mask)
    steps = [
        lambda: session.add_click(centre_ras(a)),  # a new ROI: encodes
        lambda: session.add_click(centre_ras(a), positive=False),  # same ROI: no encoding
        lambda: session.add_click(centre_ras(b)),  # far: a new ROI, encodes
        session.undo,
        session.redo,
        lambda: session.add_click(centre_ras(a)),  # back to the first ROI: cached, no encoding
        session.reset,
        session.undo,
        session.discard_last_step,
    ]
    changed_any = 0
    for step in steps:
        encodes = model.encode_calls
        result = step()
        current = arr(result.mask)
        assert np.array_equal(current, arr(session.mask)) and result.clicks == tuple(session.clicks)
        assert result.encoded == (model.encode_calls > encodes)
        assert set(result.timings) == {"preprocess", "encode", "decode", "paste", "total"}
        assert result.timings["total"] >= result.timings["encode"] >= 0.0
        assert (result.timings["encode"] > 0.0) == result.encoded
        flipped = np.argwhere(current != previous)
        if len(flipped):
            changed_any += 1
            (x, y, z), (sx, sy, sz) = result.changed
            assert (flipped.min(0) >= [z, y, x]).all() and (flipped.max(0) < [z + sz, y + sy, x + sx]).all()
        previous = current
    assert changed_any >= 7 and model.encode_calls == 2


def test_result_is_a_snapshot_later_steps_leave_alone():
    image, truth = sphere_phantom()
    session = InteractiveSession(StandInModel(), image)
    first = session.add_click(centre_ras(truth))
    kept = arr(first.mask)
    session.reset()
    assert np.array_equal(arr(first.mask), kept) and kept.any() and first.clicks == ((centre_ras(truth), True),)


def test_payloads_travel_with_their_steps_through_undo_and_redo():
    image, a, b = two_spheres_phantom()
    session = InteractiveSession(StandInModel(), image)
    note_a, note_b, note_reset = {"edit": None}, ["b"], object()
    assert session.add_click(centre_ras(a), payload=note_a).payload is note_a
    note_a["edit"] = "filled after the step"  # opaque and mutable: the session keeps the object itself
    assert session.add_click(centre_ras(b), payload=note_b).payload is note_b
    assert session.reset(payload=note_reset).payload is note_reset
    assert session.undo().payload is note_reset
    assert session.undo().payload is note_b
    undone = session.undo()
    assert undone.payload is note_a and undone.payload == {"edit": "filled after the step"}
    assert session.undo().payload is None  # nothing left to undo
    assert session.redo().payload is note_a
    assert session.redo().payload is note_b
    assert session.discard_last_step().payload is note_b  # undone and dropped, with the reset after it
    assert not session.can_redo and session.redo().payload is None
    assert session.add_click(centre_ras(b)).payload is None  # the default


def test_steps_falling_off_the_history_hand_back_their_payloads():
    image, a, b = two_spheres_phantom()
    session = InteractiveSession(StandInModel(), image, history_limit=2)
    assert session.history_limit == 2
    clicks = [(centre_ras(a), True), (centre_ras(b), True), (centre_ras(b), False), (centre_ras(a), False)]
    dropped = [session.add_click(p, positive, payload=i).dropped for i, (p, positive) in enumerate(clicks)]
    assert dropped == [(), (), (0,), (1,)]
    assert session.undo().payload == 3 and session.undo().payload == 2 and not session.can_undo
    assert len(session.clicks) == 2  # the two clicks that fell off stay applied, only not undoable
    # Undone steps forgotten by a new step are not "dropped": the caller undid them already.
    session.redo()
    assert session.add_click(centre_ras(a), payload=4).dropped == ()
    assert session.reset(payload=5).dropped == (2,)
    assert [session.undo().payload for _ in range(3)] == [5, 4, None]


def test_default_history_keeps_a_hundred_steps():
    image, truth = sphere_phantom(size=(20, 20, 20))
    session = InteractiveSession(StandInModel(), image)
    assert session.history_limit == 100
    for bad in (0, -1, 2.5, True, "10"):
        with pytest.raises(InputError, match="history limit"):
            InteractiveSession(StandInModel(), image, history_limit=bad)
    assert InteractiveSession(StandInModel(), image, history_limit=np.int64(3)).history_limit == 3


def test_history_value():
    history, dropped = History(2).push("a")
    history, dropped = history.push("b")
    assert dropped == () and history.can_undo and not history.can_redo
    history, dropped = history.push("c")
    assert dropped == ("a",) and history.steps == ("b", "c")
    back, step = history.undo()
    assert step == "c" and back.can_redo and history.cursor == 2  # the old value is untouched
    assert back.drop_undone().steps == ("b",) and back.redo() == (history, "c")
    assert History(1).undo() == (History(1), None) and History(1).redo() == (History(1), None)


def test_resetting_a_reset_session_adds_no_undo_step():
    image, truth = sphere_phantom()
    session = InteractiveSession(StandInModel(), image)
    fresh = session.reset()
    assert fresh.changed is None and not session.can_undo  # nothing to reset yet
    clicked = arr(session.add_click(centre_ras(truth)).mask)
    assert session.reset().changed is not None
    again = session.reset()
    assert again.changed is None and not arr(again.mask).any()
    assert np.array_equal(arr(session.undo().mask), clicked), "the second reset left an invisible undo step"
    assert len(session.clicks) == 1
    assert not arr(session.undo().mask).any() and not session.can_undo  # then the click, and nothing more


def test_resetting_an_untouched_refinement_adds_no_undo_step():
    image, truth = sphere_phantom()
    initial = sitk.BinaryErode(truth, [3, 3, 3])
    session = InteractiveSession(StandInModel(), image, initial_mask=initial)
    result = session.reset()
    assert result.changed is None and not session.can_undo
    assert np.array_equal(arr(result.mask), arr(initial))


def test_focus_needs_points():
    image, truth = sphere_phantom()
    session = InteractiveSession(StandInModel(), image)
    for bad, message in [
        ([], "at least one point"),
        (np.zeros((0, 3)), "at least one point"),
        (None, "a list of points"),
        ("1,2,3", "a list of points"),
        (["abc"], "three coordinates"),
        ([(1e4, 0, 0)], "outside"),
    ]:
        with pytest.raises(InputError, match=message):
            session.focus(bad)
    assert session._focus is None
    session.focus([centre_ras(truth)])
    assert session._focus is not None


class BlockingModel(StandInModel):
    """The stand-in network whose decoding waits until the test releases it."""

    def __init__(self) -> None:
        super().__init__()
        self.decoding = threading.Event()
        self.release = threading.Event()

    def decode(self, *args):
        self.decoding.set()
        assert self.release.wait(60), "the test never released the network"
        return super().decode(*args)


def test_a_step_while_another_runs_is_refused_and_changes_nothing():
    image, a, b = two_spheres_phantom()
    model = BlockingModel()
    session = InteractiveSession(model, image)
    model.release.set()
    session.add_click(centre_ras(a), payload="first")
    model.release.clear()
    before = snapshot(session)
    outcome = {}

    def click() -> None:
        try:
            outcome["result"] = session.add_click(centre_ras(b), payload="second")
        except BaseException as exc:  # noqa: BLE001 - reported to the test thread
            outcome["error"] = exc

    worker = threading.Thread(target=click)
    model.decoding.clear()
    worker.start()
    try:
        assert model.decoding.wait(60), "the first step never reached the network"
        for step in (
            lambda: session.add_click(centre_ras(b), positive=False),
            session.undo,
            session.redo,
            session.reset,
            session.discard_last_step,
            lambda: session.focus([centre_ras(a)]),
        ):
            with pytest.raises(SessionBusyError, match="busy with another step") as error:
                step()
            assert isinstance(error.value, InputError)
            assert snapshot(session) == before  # the running step has not written yet, the refused ones nothing
    finally:
        model.release.set()
        worker.join(60)
    assert "error" not in outcome, outcome
    assert outcome["result"].payload == "second" and len(session.clicks) == 2
    assert session.undo().payload == "second" and session.undo().payload == "first"  # history intact


class NonFiniteModel(StandInModel):
    """The stand-in network with a non-finite value in its embedding or its logits."""

    def __init__(self, where: str, value: float) -> None:
        super().__init__()
        self.where, self.value = where, value

    def encode(self, crop):
        embedding = super().encode(crop)
        if self.where == "embedding":
            embedding[0, 0, 5, 5, 5] = self.value
        return embedding

    def decode(self, *args):
        logits, iou = super().decode(*args)
        if self.where == "logits":
            logits = logits.clone()
            logits[0, 0, 3, 4, 5] = self.value
        return logits, iou


@pytest.mark.parametrize("where", ["logits", "embedding"])
@pytest.mark.parametrize("value", [float("nan"), float("inf")], ids=["nan", "inf"])
def test_non_finite_network_output_is_an_error_and_changes_nothing(where, value):
    image, a, b = far_spheres_phantom()
    model = NonFiniteModel("", 0.0)
    session = InteractiveSession(model, image)
    session.add_click(centre_ras(a))
    before = snapshot(session)
    model.where, model.value = where, value
    with pytest.raises(NetworkOutputError, match="NaN or Inf.*weights are probably damaged or incompatible"):
        session.add_click(centre_ras(b))  # a new ROI: encodes, then decodes
    assert isinstance(NetworkOutputError("x"), SAMMed3DError) and not isinstance(NetworkOutputError("x"), InputError)
    assert snapshot(session) == before
    model.where = ""
    assert session.add_click(centre_ras(b)).encoded == (where == "embedding")  # a broken embedding is not cached


def test_damaged_weights_of_the_real_network_are_reported(tiny_checkpoint):
    from SAMMed3DLib import load_model

    model = load_model(tiny_checkpoint, device="cpu")
    with torch.no_grad():
        for parameter in model.mask_decoder.parameters():
            parameter.fill_(float("nan"))
    image, truth = sphere_phantom()
    session = InteractiveSession(model, image)
    with pytest.raises(NetworkOutputError, match="mask decoder logits"):
        session.add_click(centre_ras(truth))
    assert not arr(session.mask).any() and session.clicks == [] and not session.can_undo


def test_segment_with_nan_weights_is_one_error_line_and_no_output(tmp_path, tiny_checkpoint, capsys):
    """NaN in a checkpoint once gave an empty mask and exit status 0."""
    from SAMMed3DLib.cli import main

    checkpoint = torch.load(tiny_checkpoint, weights_only=False)
    for name, tensor in checkpoint["model_state_dict"].items():
        if name.startswith("mask_decoder.") and tensor.is_floating_point():
            tensor.fill_(float("nan"))
    damaged = tmp_path / "damaged.pth"
    torch.save(checkpoint, damaged)
    image, truth = sphere_phantom(size=(32, 32, 32))
    sitk.WriteImage(image, str(tmp_path / "image.nii.gz"))
    out = tmp_path / "mask.nii.gz"
    point = ",".join(str(v) for v in centre_ras(truth))
    argv = ["segment", "--image", str(tmp_path / "image.nii.gz"), "--weights", str(damaged), "--out", str(out)]
    code = main([*argv, "--positive", point, "--device", "cpu"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error: ") and len(err.splitlines()) == 1 and "NaN" in err, err
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["damaged.pth", "image.nii.gz"]

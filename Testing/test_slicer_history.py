"""The Slicer module's click history on real MRML: queued clicks, the undo limit shared with the session,
options that reach sessions in progress. Scenes as in test_slicer_module.py."""

import threading

import numpy as np
import pytest
import SimpleITK as sitk
from support.mainloop import under_main_loop  # noqa: F401 - the fixture, used by pytestmark
from support.slicer_scene import build_app_scene

from SAMMed3DLib.slicer import markups, mrml
from SAMMed3DLib.slicer.scenario import SPHERE_CENTER_RAS, PhantomModel, Scenario

pytestmark = pytest.mark.usefixtures("under_main_loop")  # the worker runs as under Slicer's main loop

BELOW = tuple(np.add(SPHERE_CENTER_RAS, (0.0, 0.0, -16.0)))  # mm RAS, inside the sphere
ABOVE = tuple(np.add(SPHERE_CENTER_RAS, (0.0, 0.0, 16.0)))


@pytest.fixture
def scenario():
    app = build_app_scene()
    scenario = Scenario(app.scene, model=PhantomModel())
    yield scenario
    scenario.controller.cleanup()
    app.close()


class BlockingModel(PhantomModel):
    """The phantom network whose decoding waits until the test releases it (so clicks pile up meanwhile)."""

    def __init__(self) -> None:
        self.decoding = threading.Event()
        self.release = threading.Event()

    def decode(self, *args, **kwargs):
        self.decoding.set()
        assert self.release.wait(60), "the test never released the model"
        return super().decode(*args, **kwargs)


def _same_clicks(actual, expected) -> bool:
    """Same (RAS point, positive) clicks in the same order (points to 1e-6 mm)."""
    as_rows = lambda clicks: np.array([[*point, positive] for point, positive in clicks], dtype=float)  # noqa: E731
    return len(actual) == len(expected) and np.allclose(as_rows(actual), as_rows(expected), atol=1e-6)


def test_clicks_made_while_busy_are_queued_not_lost(scenario):
    model = BlockingModel()
    scenario.controller.set_model("blocking", model)
    clicks = [(SPHERE_CENTER_RAS, True), (BELOW, False), (tuple(np.add(SPHERE_CENTER_RAS, (4.0, 0, 0))), True),
              (ABOVE, False)]  # fmt: skip
    point, positive = clicks[0]
    (scenario.positive if positive else scenario.negative).AddControlPointWorld(*point)  # fires the observer
    assert model.decoding.wait(60), "the first click never reached the network"
    for point, positive in clicks[1:]:  # placed while the first click is still being decoded
        (scenario.positive if positive else scenario.negative).AddControlPointWorld(*point)
    queued = [(action.point, action.positive) for action in scenario.controller._actions]
    assert _same_clicks(queued, clicks[1:]) and scenario.controller.busy
    assert scenario.controller.target().clicks() == ()
    model.release.set()
    scenario.controller.wait()
    assert scenario.controller.last_error is None, scenario.controller.last_error
    target = scenario.controller.target()
    assert _same_clicks(target.clicks(), clicks), "not all, or not in order"
    assert _same_clicks(target.session.clicks, clicks)


def _undo(scenario, times: int = 1) -> None:
    for _ in range(times):
        scenario.controller.undo()
    scenario.controller.wait()


def test_undo_never_goes_past_the_session_history(scenario):
    scenario.controller.history_limit = 2
    neighbour = scenario.neighbour_digest()
    scenario.click(SPHERE_CENTER_RAS)
    after_first = scenario.target_voxels()
    scenario.click(BELOW, positive=False)
    after_second = scenario.target_voxels()
    scenario.click(ABOVE, positive=False)
    after_third = scenario.target_voxels()
    target = scenario.controller.target()
    assert target.session.history_limit == 2 and target.clicks()[0] == (pytest.approx(SPHERE_CENTER_RAS), True)
    _undo(scenario, 3)  # the third undo is one more than the session keeps: it must do nothing
    session = target.session
    assert not scenario.controller.can_undo and len(session.clicks) == 1
    assert np.array_equal(scenario.target_voxels(), after_first), "undo went past the session's history"
    assert (scenario.positive.GetNumberOfControlPoints(), scenario.negative.GetNumberOfControlPoints()) == (1, 0)
    for _ in range(2):
        scenario.controller.redo()
    scenario.controller.wait()
    assert np.array_equal(scenario.target_voxels(), after_third)
    _undo(scenario, 2)
    scenario.click(BELOW, positive=False)  # the session still holds click 1, and so does the scene
    assert np.array_equal(scenario.target_voxels(), after_second)
    scenario.controller.reset()  # also reverts the click that fell off the history
    scenario.controller.wait()
    assert not scenario.target_voxels().any() and scenario.positive.GetNumberOfControlPoints() == 0
    assert scenario.neighbour_digest() == neighbour


def test_reset_restores_a_replaced_segment_after_the_history_limit(scenario):
    """A fresh start replaces the segment's old content; reset brings it back even when that first step
    is no longer undoable."""
    scenario.controller.history_limit = 1
    scenario.click(SPHERE_CENTER_RAS)
    scenario.controller.finish()
    scenario.controller.wait()
    old = scenario.target_voxels()
    scenario.click(BELOW)  # a new session, starting fresh: the old content goes
    scenario.click(ABOVE, positive=False)
    scenario.click(BELOW, positive=False)
    assert not np.array_equal(scenario.target_voxels(), old)
    scenario.controller.reset()
    scenario.controller.wait()
    assert np.array_equal(scenario.target_voxels(), old)


def test_auto_extend_reaches_a_segment_in_progress(scenario):
    scenario.click(SPHERE_CENTER_RAS)
    session = scenario.controller.target().session
    assert session.auto_extend is False
    scenario.controller.set_options(auto_extend=True)
    assert session.auto_extend is True
    scenario.click(BELOW, positive=False)
    assert scenario.controller.target().session is session and scenario.controller.last_error is None
    scenario.controller.set_options(auto_extend=False)
    assert session.auto_extend is False


def _fail_once(monkeypatch, name: str) -> None:
    """Make ``mrml.<name>`` raise on its next call only (a scene write that fails)."""
    real = getattr(mrml, name)

    def fail(*args, **kwargs):
        monkeypatch.setattr(mrml, name, real)
        raise RuntimeError("scene write failed")

    monkeypatch.setattr(mrml, name, fail)


def _check_consistent(scenario, clicks) -> None:
    """Session, controller history, point lists and segment all hold exactly ``clicks``."""
    target = scenario.controller.target()
    assert _same_clicks(target.session.clicks, clicks) and _same_clicks(target.clicks(), clicks)
    for node, positive in ((scenario.positive, True), (scenario.negative, False)):
        assert _same_clicks(
            [(p, positive) for p in markups.control_points_ras(node)], [c for c in clicks if c[1] == positive]
        )
    region = scenario.geometry.full_region()
    neighbour = mrml.read_segment(scenario.segmentation, scenario.neighbour, scenario.geometry, region)
    session_voxels = sitk.GetArrayFromImage(target.session.mask) != 0
    assert np.array_equal(scenario.target_voxels(), session_voxels & ~neighbour), "segment and session differ"
    assert scenario.controller.can_redo == target.session.can_redo
    assert scenario.controller.can_undo == target.session.can_undo


def test_a_click_the_scene_rejects_leaves_no_redo_behind(scenario, monkeypatch):
    """Click A, click B, undo, click C whose scene write fails: the session committed C (dropping B's redo), so
    taking C back must not turn it into a redo step while the scene still offers B."""
    a, b, c = (SPHERE_CENTER_RAS, True), (BELOW, False), (ABOVE, False)
    scenario.click(*a)
    scenario.click(*b)
    _undo(scenario)
    after_a = scenario.target_voxels()
    _fail_once(monkeypatch, "apply_mask")
    scenario.click(*c)
    assert [text for text, error in scenario.controller.messages if error] == [
        "Unexpected error: RuntimeError('scene write failed')"
    ]
    assert not scenario.controller.can_redo
    _check_consistent(scenario, [a])
    assert np.array_equal(scenario.target_voxels(), after_a)
    scenario.controller.redo()  # nothing to redo: neither B nor C comes back
    scenario.controller.wait()
    _check_consistent(scenario, [a])
    scenario.click(*c)
    after_ac = scenario.target_voxels()
    _check_consistent(scenario, [a, c])
    _undo(scenario)
    _check_consistent(scenario, [a])
    assert np.array_equal(scenario.target_voxels(), after_a)
    scenario.controller.redo()
    scenario.controller.wait()
    _check_consistent(scenario, [a, c])
    assert np.array_equal(scenario.target_voxels(), after_ac)
    assert len(scenario.controller.messages) == 1


@pytest.mark.parametrize("action", ["undo", "redo"])
def test_a_failed_undo_or_redo_write_changes_nothing(scenario, monkeypatch, action):
    a, b = (SPHERE_CENTER_RAS, True), (BELOW, False)
    scenario.click(*a)
    scenario.click(*b)
    if action == "redo":
        _undo(scenario)
    expected = [a, b] if action == "undo" else [a]
    target = scenario.controller.target()
    voxels, history = scenario.target_voxels(), (target.clicks(), target.session.can_undo, target.session.can_redo)
    _fail_once(monkeypatch, "revert_edit")
    getattr(scenario.controller, action)()
    scenario.controller.wait()
    errors = [text for text, error in scenario.controller.messages if error]
    assert errors == ["Unexpected error: RuntimeError('scene write failed')"]
    _check_consistent(scenario, expected)
    assert np.array_equal(scenario.target_voxels(), voxels)
    assert (target.clicks(), target.session.can_undo, target.session.can_redo) == history
    getattr(scenario.controller, action)()  # the retry works
    scenario.controller.wait()
    _check_consistent(scenario, [a] if action == "undo" else [a, b])
    assert len(scenario.controller.messages) == 1


def test_a_rejected_click_on_a_full_history_keeps_undo_in_step(scenario, monkeypatch):
    """Committing the rejected click pushed the oldest step out of the session's full history; the scene's
    history follows, so undo still stops where the session does."""
    scenario.controller.history_limit = 2
    a, b, c = (SPHERE_CENTER_RAS, True), (BELOW, False), (ABOVE, False)
    scenario.click(*a)
    after_a = scenario.target_voxels()
    scenario.click(*b)
    _fail_once(monkeypatch, "apply_mask")
    scenario.click(*c)
    _check_consistent(scenario, [a, b])
    _undo(scenario)  # as many undo steps as the session holds: one, b
    assert not scenario.controller.can_undo
    _undo(scenario)  # only b was undoable in the session
    _check_consistent(scenario, [a])
    assert not scenario.controller.can_undo and np.array_equal(scenario.target_voxels(), after_a)

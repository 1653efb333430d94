"""InteractiveSession mechanics with the deterministic stand-in network (Testing/standin.py)."""

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from support.phantoms import (
    centre_ras,
    cylinder_phantom,
    dice,
    far_spheres_phantom,
    make_image,
    sphere_phantom,
    two_spheres_phantom,
)
from support.session_state import snapshot
from support.standin import StandInModel

from SAMMed3DLib import InputError, InteractiveSession


def arr(image: sitk.Image) -> np.ndarray:
    return sitk.GetArrayFromImage(image)


def same_grid(a: sitk.Image, b: sitk.Image) -> bool:
    return (
        a.GetSize() == b.GetSize()
        and np.allclose(a.GetSpacing(), b.GetSpacing())
        and np.allclose(a.GetOrigin(), b.GetOrigin())
        and np.allclose(a.GetDirection(), b.GetDirection())
    )


OBLIQUE = tuple(
    (
        np.array([[np.cos(0.4), -np.sin(0.4), 0], [np.sin(0.4), np.cos(0.4), 0], [0, 0, 1]]) @ np.diag([-1.0, 1.0, 1.0])
    ).reshape(-1)
)


@pytest.mark.parametrize(
    "spacing, direction",
    [((3.0, 3.0, 3.0), None), ((2.5, 2.0, 4.0), (-1, 0, 0, 0, -1, 0, 0, 0, 1)), ((3.0, 3.0, 3.0), OBLIQUE)],
    ids=["lps", "ras-anisotropic", "oblique"],
)
def test_click_lands_on_the_sphere(spacing, direction):
    image, truth = sphere_phantom(spacing=spacing, direction=direction, centre_ras=(-60.0, -110.0, 70.0))
    if direction is not None:  # keep the sphere inside the re-oriented volume
        centre = image.TransformContinuousIndexToPhysicalPoint([20.0, 28.0, 24.0])
        image, truth = sphere_phantom(
            spacing=spacing, direction=direction, centre_ras=(-centre[0], -centre[1], centre[2])
        )
    session = InteractiveSession(StandInModel(), image)
    result = session.add_click(centre_ras(truth))
    mask = result.mask
    assert mask.GetPixelID() == sitk.sitkUInt8 and same_grid(mask, image)
    assert set(np.unique(arr(mask))) <= {0, 1}
    assert dice(mask, truth) >= 0.9
    assert result.encoded and set(result.timings) == {"preprocess", "encode", "decode", "paste", "total"}


def test_refinement_reuses_embedding_and_feeds_back_clicks_and_logits():
    image, truth = sphere_phantom()
    model = StandInModel()
    session = InteractiveSession(model, image)
    session.add_click(centre_ras(truth))
    first_mask_prompt = model.decode_calls[0][2]
    assert first_mask_prompt is not None and not first_mask_prompt.any()  # zeros on the first click, as official
    low_after_first = session._state.low_res.clone()
    result = session.add_click((-80.0, -95.0, 92.0), positive=True)
    assert model.encode_calls == 1 and not result.encoded
    coords, labels, mask_prompt = model.decode_calls[1]
    assert len(coords) == 2 and labels.tolist() == [1, 1]
    assert coords[0].tolist() == [64, 64, 64]  # the first click was the ROI's centre
    assert torch.equal(mask_prompt, low_after_first)
    assert result.timings["encode"] == 0.0 and result.timings["preprocess"] == 0.0


def test_negative_click_removes_object_and_undo_redo_are_exact():
    image, a, b = two_spheres_phantom()
    model = StandInModel()
    session = InteractiveSession(model, image)
    m1 = arr(session.add_click(centre_ras(a)).mask)
    m2 = arr(session.add_click(centre_ras(b)).mask)
    assert dice(session.mask, sitk.Or(a, b)) >= 0.9
    m3 = arr(session.add_click(centre_ras(b), positive=False).mask)
    assert dice(session.mask, a) >= 0.9
    assert model.encode_calls == 1

    assert np.array_equal(arr(session.undo().mask), m2)
    assert session.clicks == [(centre_ras(a), True), (centre_ras(b), True)]
    assert session.can_undo and session.can_redo
    assert np.array_equal(arr(session.undo().mask), m1)
    assert np.array_equal(arr(session.redo().mask), m2)
    assert np.array_equal(arr(session.redo().mask), m3) and not session.can_redo
    # Undo, then continue: the model state is that of click 2 (its logits and both clicks).
    session.undo()
    logits_after_2 = session._state.low_res
    session.add_click(centre_ras(b), positive=False)
    coords, labels, mask_prompt = model.decode_calls[-1]
    assert labels.tolist() == [1, 1, 0] and torch.equal(mask_prompt, logits_after_2)
    assert np.array_equal(arr(session.mask), m3) and not session.can_redo


def test_changed_region_bounds_every_change():
    image, a, b = two_spheres_phantom()
    session = InteractiveSession(StandInModel(), image)
    previous = arr(session.mask)
    for step in (
        lambda: session.add_click(centre_ras(a)),
        lambda: session.add_click(centre_ras(b)),
        lambda: session.add_click(centre_ras(b), False),
        session.undo,
        session.redo,
        session.reset,
        session.undo,
    ):
        result = step()
        current = arr(result.mask)
        changed = np.argwhere(current != previous)
        if len(changed):
            (x, y, z), (sx, sy, sz) = result.changed
            assert (changed.min(0) >= [z, y, x]).all() and (changed.max(0) < [z + sz, y + sy, x + sx]).all()
        previous = current


def test_reset_clears_and_is_undoable():
    image, truth = sphere_phantom()
    session = InteractiveSession(StandInModel(), image)
    clicked = arr(session.add_click(centre_ras(truth)).mask)
    assert not arr(session.reset().mask).any() and session.clicks == []
    assert session.roi is None
    assert np.array_equal(arr(session.undo().mask), clicked) and len(session.clicks) == 1


def test_click_outside_roi_recentres_to_keep_earlier_clicks():
    image, truth = cylinder_phantom(length=300.0)
    model = StandInModel()
    session = InteractiveSession(model, image)
    r, a, s = centre_ras(truth)
    low, high = (r, a, s - 60.0), (r, a, s + 110.0)  # 170 mm apart: fit together in one ROI
    session.add_click(low)
    first_roi = session.roi
    session.add_click(high)
    assert session.roi != first_roi and model.encode_calls == 2
    assert session.roi.contains(np.array([-r, -a, s - 60.0])) and session.roi.contains(np.array([-r, -a, s + 110.0]))
    coords, labels, mask_prompt = model.decode_calls[-1]
    assert len(coords) == 2 and mask_prompt.max() > 0  # earlier click kept; the mask so far as mask prompt


def test_far_click_starts_new_roi_and_merges():
    image, a, b = far_spheres_phantom()
    model = StandInModel()
    session = InteractiveSession(model, image)
    session.add_click(centre_ras(a))
    session.add_click(centre_ras(b))
    coords, labels, _ = model.decode_calls[-1]
    assert len(coords) == 1  # the first click is too far to share the ROI
    assert dice(session.mask, sitk.Or(a, b)) >= 0.9
    # Back in the first object's ROI: re-encoded only if it fell out of the cache (it did not).
    session.add_click(centre_ras(a))
    assert model.encode_calls == 2


def test_auto_extend_follows_a_long_cylinder():
    image, truth = cylinder_phantom(length=400.0)
    centre = centre_ras(truth)
    plain = InteractiveSession(StandInModel(), image)
    partial = dice(plain.add_click(centre).mask, truth)
    model = StandInModel()
    extended = InteractiveSession(model, image, auto_extend=True, max_extend_steps=4)
    full = dice(extended.add_click(centre).mask, truth)
    assert partial < 0.8 <= 0.95 <= full, (partial, full)
    assert model.encode_calls == 3  # the click's ROI and one neighbour on each side
    assert np.array_equal(arr(extended.undo().mask), np.zeros_like(arr(truth)))
    assert extended.roi is None


def test_initial_mask_is_refined():
    image, truth = sphere_phantom()
    eroded = sitk.BinaryErode(truth, [3, 3, 3])
    model = StandInModel()
    session = InteractiveSession(model, image, initial_mask=eroded * 7)
    assert np.array_equal(arr(session.mask), arr(eroded))
    session.add_click(centre_ras(truth))
    assert model.decode_calls[0][2].max() > 0  # the starting mask went in as the mask prompt
    assert dice(session.mask, truth) > dice(eroded, truth)
    session.reset()
    assert np.array_equal(arr(session.mask), arr(eroded))


def _flat_direction() -> sitk.Image:
    image = make_image(np.arange(16**3).reshape(16, 16, 16))
    image.SetDirection((1, 1, 0, 0, 1e-4, 0, 0, 0, 1))  # the first two axes nearly parallel
    return image


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: sitk.GetImageFromArray(np.arange(32 * 32, dtype=np.int16).reshape(32, 32)), "is 2-D"),
        (
            lambda: sitk.GetImageFromArray(np.random.default_rng(0).integers(0, 255, (8, 8, 8, 3), np.uint8), True),
            "3 components per voxel",
        ),
        (lambda: sitk.GetImageFromArray(np.random.default_rng(0).random((3, 8, 8, 8), np.float32), False), "is 4-D"),
        (lambda: make_image(np.arange(16 * 16).reshape(1, 16, 16)), "is not a volume"),
        (_flat_direction, "direction matrix"),
        (lambda: make_image(np.zeros((16, 16, 16))), "empty: every voxel is 0"),
        (
            lambda: make_image(
                np.where(np.arange(512) == 99, np.nan, np.arange(512.0)).reshape(8, 8, 8), pixel_type=np.float32
            ),
            "NaN",
        ),
    ],
    ids=["2d", "rgb", "4d", "flat", "degenerate-direction", "constant", "nan"],
)
def test_bad_image_raises_input_error(make, message):
    image = make()
    if message != "empty: every voxel is 0":  # each image fails only for the reason it stands for
        assert len(np.unique(np.nan_to_num(sitk.GetArrayViewFromImage(image), nan=-1.0))) > 1
    with pytest.raises(InputError, match=message):
        InteractiveSession(StandInModel(), image)


def test_emptiness_is_judged_on_the_whole_volume():
    values = np.full((16, 16, 16), 7.0)
    with pytest.raises(InputError, match="empty: every voxel is 7"):
        InteractiveSession(StandInModel(), make_image(values))
    values[-1, -1, -1] = 8.0  # the only other value, in the last slice read
    InteractiveSession(StandInModel(), make_image(values))


def test_bad_clicks_leave_session_unchanged():
    image, truth = sphere_phantom()
    session = InteractiveSession(StandInModel(), image)
    before = arr(session.add_click(centre_ras(truth)).mask)
    for bad, message in [
        ((1e4, 0, 0), "outside the image volume"),
        ((np.nan, 0, 0), "three finite coordinates"),
        ((1, 2), "three finite coordinates"),
        ("abc", "three coordinates"),
    ]:
        with pytest.raises(InputError, match=message):
            session.add_click(bad)
    assert np.array_equal(arr(session.mask), before) and len(session.clicks) == 1


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda m: sitk.Image([3, 3, 3], sitk.sitkUInt8), "its size (3, 3, 3) differs"),
        (lambda m: m.SetOrigin((100.0, 0.0, 0.0)), "its origin (100, 0, 0) mm differs"),
        (lambda m: m.SetSpacing((3.0, 3.0, 3.1)), "its spacing"),
        (lambda m: m.SetDirection((-1, 0, 0, 0, -1, 0, 0, 0, 1)), "its direction"),
        (lambda m: sitk.Compose(m, m), "must be a 3-D scalar image"),
    ],
    ids=["size", "origin", "spacing", "direction", "vector"],
)
def test_initial_mask_off_the_grid_is_one_clear_error(change, message):
    image, truth = sphere_phantom(size=(20, 20, 20))
    mask = sitk.Image(truth)
    mask = change(mask) or mask
    with pytest.raises(InputError, match="the initial mask must") as error:
        InteractiveSession(StandInModel(), image, initial_mask=mask)
    assert message in str(error.value)
    # Within the tolerance (float32 round-off of a file format) the mask is accepted.
    mask = sitk.Image(truth)
    mask.SetOrigin([v + 1e-5 for v in image.GetOrigin()])
    InteractiveSession(StandInModel(), image, initial_mask=mask)


class FailingModel(StandInModel):
    """The stand-in network; after ``fail_on(n)`` its n-th decode from then on raises (once)."""

    def __init__(self) -> None:
        super().__init__()
        self.fail_at = None

    def fail_on(self, n: int) -> None:
        self.fail_at = len(self.decode_calls) + n

    def decode(self, *args):
        if self.fail_at is not None and len(self.decode_calls) + 1 == self.fail_at:
            self.fail_at = None
            raise RuntimeError("decode failed")
        return super().decode(*args)


@pytest.mark.parametrize("earlier", [0, 1], ids=["first-click", "after-a-click"])
@pytest.mark.parametrize("fail_on", [1, 2, 3])
def test_click_failing_halfway_leaves_session_unchanged(earlier, fail_on):
    """Decode 1 is the click's own ROI, decodes 2 and 3 are auto-extension neighbours."""
    image, truth = cylinder_phantom(length=400.0)
    r, a, s = centre_ras(truth)
    clicks = [(r, a, s - 30.0), (r, a, s)][-1 - earlier :]
    model = FailingModel()
    session = InteractiveSession(model, image, auto_extend=True, max_extend_steps=4)
    for click in clicks[:-1]:
        session.add_click(click)
    before = snapshot(session)
    model.fail_on(fail_on)
    with pytest.raises(RuntimeError, match="^decode failed$"):
        session.add_click(clicks[-1])
    assert snapshot(session) == before
    # The session goes on as if the failed click never happened.
    calls = len(model.decode_calls)
    result = session.add_click(clicks[-1])
    assert len(model.decode_calls) - calls >= fail_on  # the failure was inside the click's step
    reference = InteractiveSession(StandInModel(), image, auto_extend=True, max_extend_steps=4)
    for click in clicks:
        expected = reference.add_click(click)
    assert snapshot(session)["mask"] == snapshot(reference)["mask"] and session.clicks == reference.clicks
    assert result.changed == expected.changed and result.clicks == expected.clicks


@pytest.mark.parametrize("fail_on", [1, 2, 3])
def test_undo_and_redo_failing_halfway_leave_session_unchanged(monkeypatch, fail_on):
    import SAMMed3DLib.session as S

    image, truth = cylinder_phantom(length=400.0)
    session = InteractiveSession(StandInModel(), image, auto_extend=True, max_extend_steps=4)
    session.add_click(centre_ras(truth))
    assert len(session._history.steps[-1].edits) == 3  # the click's ROI and two neighbours
    real_write, writes = S.write_region, []

    def failing_write(*args):
        writes.append(args)
        if len(writes) == fail_on:
            raise MemoryError("no memory")
        real_write(*args)

    for step in (session.undo, session.redo):
        before = snapshot(session)
        writes.clear()
        with monkeypatch.context() as m:
            m.setattr(S, "write_region", failing_write)
            with pytest.raises(MemoryError):
                step()
        assert snapshot(session) == before
        step()  # now it works: undo (then redo) for real
    assert dice(session.mask, truth) > 0.95


def test_undo_redo_without_history_are_harmless():
    image, _ = sphere_phantom(size=(20, 20, 20))
    session = InteractiveSession(StandInModel(), image)
    assert not session.can_undo and not session.can_redo
    undone = session.undo()
    assert not arr(undone.mask).any() and undone.changed is None and undone.payload is None
    redone = session.redo()
    assert not arr(redone.mask).any() and redone.changed is None and redone.payload is None


def test_tiny_network_end_to_end(tiny_model):
    image, truth = sphere_phantom()
    session = InteractiveSession(tiny_model, image)
    result = session.add_click(centre_ras(truth))
    mask = result.mask
    assert same_grid(mask, image) and mask.GetPixelID() == sitk.sitkUInt8 and result.encoded
    first = arr(mask)
    result = session.add_click((-80.0, -95.0, 92.0), positive=False)
    second = arr(result.mask)
    assert not result.encoded
    assert np.array_equal(arr(session.undo().mask), first)
    assert np.array_equal(arr(session.redo().mask), second)
    roi_input = session.roi_input_image()
    assert roi_input.GetSize() == (128, 128, 128) and roi_input.GetSpacing() == (1.5, 1.5, 1.5)


def test_sessions_of_one_image_share_an_embedding_cache():
    from SAMMed3DLib.session import EmbeddingCache

    image, truth = sphere_phantom()
    cache, model = EmbeddingCache(), StandInModel()
    first = InteractiveSession(model, image, embedding_cache=cache)
    assert first.add_click(centre_ras(truth)).encoded
    second = InteractiveSession(model, image, embedding_cache=cache)
    result = second.add_click(centre_ras(truth), positive=True)
    assert not result.encoded and result.timings["encode"] == 0.0
    other_model = InteractiveSession(StandInModel(), image, embedding_cache=cache)
    assert other_model.add_click(centre_ras(truth)).encoded  # embeddings of another network are never reused


def test_reading_a_steps_changed_region_does_not_copy_the_volume():
    """A step's mask shares its pixels with the session's; reading the changed region (as the Slicer module and
    the server do) leaves them shared: a numpy view of the whole snapshot would copy the volume first."""
    from SAMMed3DLib.regions import read_region
    from SAMMed3DLib.slicer import mrml

    image, truth = sphere_phantom(size=(40, 40, 40))
    session = InteractiveSession(StandInModel(), image)
    result = session.add_click(centre_ras(truth))
    voxels = read_region(result.mask, result.changed)
    assert voxels.any() and not result.mask.IsUnique()
    assert np.array_equal(mrml.mask_region(result.mask, result.changed), voxels != 0) and not result.mask.IsUnique()
    after = session.add_click(centre_ras(truth), positive=False)  # the session writes its own copy
    assert not np.array_equal(read_region(after.mask, result.changed), voxels)
    assert np.array_equal(read_region(result.mask, result.changed), voxels)  # the earlier step's mask kept

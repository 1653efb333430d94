"""An edit made outside the session (``adopt``: a hand-painted correction) and a session that continues earlier
clicks on new voxels (``clicks=``), with the deterministic stand-in network (Testing/support/standin.py)."""

import numpy as np
import pytest
import SimpleITK as sitk
from support.phantoms import centre_ras, sphere_phantom
from support.standin import StandInModel

from SAMMed3DLib import InputError, InteractiveSession
from SAMMed3DLib.regions import zyx_slices

REGION = ((20, 20, 20), (24, 24, 24))  # x, y, z: around the sphere's surface (centre voxel ~(34, 34, 34))


def voxels(image: sitk.Image) -> np.ndarray:
    return sitk.GetArrayFromImage(image)


@pytest.fixture
def clicked():
    """A session on the sphere phantom after one positive click at its centre."""
    image, truth = sphere_phantom()
    session = InteractiveSession(StandInModel(), image)
    session.add_click(centre_ras(truth))
    return session, truth


def hand_edit(mask: np.ndarray):
    """Paint a block outside the sphere, erase a block inside it; (painted, erased) over REGION."""
    window = mask[zyx_slices(REGION)]
    painted, erased = np.zeros(window.shape, bool), np.zeros(window.shape, bool)
    painted[:4, :4, :4] = window[:4, :4, :4] == 0
    erased[12:16, 12:16, 12:16] = window[12:16, 12:16, 12:16] == 1
    assert painted.any() and erased.any()
    return painted, erased


def test_hand_edits_become_the_state_stay_through_clicks_and_undo_steps_back_over_them(clicked):
    session, truth = clicked
    before = voxels(session.mask)
    painted, erased = hand_edit(before)
    adopted = session.adopt(REGION, painted, erased, payload="paint")
    assert adopted.payload == "paint" and len(adopted.clicks) == 1 and session.can_undo
    edited = voxels(session.mask)
    window = edited[zyx_slices(REGION)]
    assert window[painted].all() and not window[erased].any()
    assert np.array_equal(edited != before, np.pad(painted | erased, [(20, 20)] * 3))
    session.add_click(centre_ras(truth))  # the stand-in predicts the whole sphere again: the edit wins
    window = voxels(session.mask)[zyx_slices(REGION)]
    assert window[painted].all() and not window[erased].any()
    session.undo()  # the click: back to the painted state
    assert np.array_equal(voxels(session.mask), edited)
    session.undo()  # the edit itself
    assert np.array_equal(voxels(session.mask), before)
    session.redo()
    session.redo()
    session.reset()  # back to the empty start; the held voxels go with it
    assert not voxels(session.mask).any()
    session.add_click(centre_ras(truth))
    assert voxels(session.mask)[zyx_slices(REGION)][erased].all(), "a reset session still held the erased voxels"


def test_the_next_click_sees_the_edited_mask_as_its_previous_mask(clicked):
    session, truth = clicked
    painted, erased = hand_edit(voxels(session.mask))
    session.adopt(REGION, painted, erased)
    session.add_click(centre_ras(truth))
    mask_prompt = session._model.decode_calls[-1][2]
    assert mask_prompt is not None and float(mask_prompt.min()) < 0 < float(mask_prompt.max())


def test_a_bad_hand_edit_changes_nothing(clicked):
    session, _ = clicked
    before, clicks = voxels(session.mask), session.clicks
    block = np.ones((24, 24, 24), bool)
    with pytest.raises(InputError, match="both paint and erase"):
        session.adopt(REGION, block, block)
    with pytest.raises(InputError, match="outside the image"):
        session.adopt(((50, 50, 50), (24, 24, 24)), block, ~block)
    with pytest.raises(InputError, match=r"\(24, 24, 24\)"):
        session.adopt(REGION, block[:2], block[:2])
    assert np.array_equal(voxels(session.mask), before) and session.clicks == clicks


def test_a_session_continues_earlier_clicks_on_new_voxels():
    image, truth = sphere_phantom()
    first = InteractiveSession(StandInModel(), image)
    first.add_click(centre_ras(truth))
    model = StandInModel()
    continued = InteractiveSession(model, image, initial_mask=first.mask, clicks=first.clicks)
    assert continued.clicks == first.clicks and not continued.can_undo
    continued.add_click(np.add(centre_ras(truth), (3.0, 0.0, 0.0)), positive=False)
    coords, labels, mask_prompt = model.decode_calls[-1]
    assert list(labels) == [1, 0] and mask_prompt is not None, "the earlier click is no prompt"
    assert len(continued.clicks) == 2
    with pytest.raises(InputError, match="three coordinates"):
        InteractiveSession(model, image, clicks=[("a", True)])
    with pytest.raises(InputError, match="earlier clicks"):
        InteractiveSession(model, image, clicks=[1.0])

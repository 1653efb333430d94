"""The server's parts without Ray or HTTP: the wire format, the token rule, one worker's sessions."""

import zlib

import numpy as np
import pytest
import SimpleITK as sitk
from support.phantoms import centre_ras, sphere_phantom

from SAMMed3DLib import InteractiveSession
from SAMMed3DLib.errors import InputError
from SAMMed3DLib.protocol import (
    MAGIC_RAW,
    ProtocolError,
    apply_flips,
    nonzero_box,
    pack_frame,
    raw_volume,
    take_flips,
    unpack_bits,
    unpack_frame,
    volume_from_raw,
    worth_compressing,
)
from SAMMed3DLib.remote import _upload
from SAMMed3DLib.server.config import Limits, ServerConfig, check_config, read_token, token_matches
from SAMMed3DLib.server.core import Failure, WorkerCore
from SAMMed3DLib.server.uploads import volume_from_file_bytes


def test_a_raw_volume_keeps_voxels_and_geometry():
    image, _ = sphere_phantom(size=(20, 18, 16), spacing=(0.7, 0.8, 2.5),
                              direction=(0, 1, 0, 1, 0, 0, 0, 0, -1))
    header, data = raw_volume(image)
    back = volume_from_raw(header, data)
    assert np.array_equal(sitk.GetArrayViewFromImage(back), sitk.GetArrayViewFromImage(image))
    assert (back.GetSpacing(), back.GetOrigin(), back.GetDirection()) == (
        image.GetSpacing(), image.GetOrigin(), image.GetDirection())


def test_frames_refuse_garbage_truncation_and_zip_bombs():
    header, body = unpack_frame(pack_frame({"a": 1}, b"xyz"))
    assert header == {"a": 1} and body == b"xyz"
    with pytest.raises(ProtocolError, match="not a SAM-Med3D frame"):
        unpack_frame(b"\x80\x04pickle")
    with pytest.raises(ProtocolError, match="ends early"):
        unpack_frame(pack_frame({}, b"0" * 1000, compress=True)[:-4])
    bomb = pack_frame({}, bytes(10_000_000))
    assert len(bomb) < 50_000  # 10 MB of zeros at level 1
    with pytest.raises(ProtocolError, match="more than the server's limit of 1000000 bytes"):
        unpack_frame(bomb, max_body=1_000_000)
    with pytest.raises(ProtocolError, match="do not hold"):
        unpack_bits(zlib.compress(b"1"), (4, 4, 4))


def test_an_unreadable_file_volume_names_its_format():
    with pytest.raises(InputError, match="the uploaded nrrd volume cannot be read"):
        volume_from_file_bytes("nrrd", b"NRRD0004\ntype: short\nsizes: 2 2 2\nencoding: raw\n\nxyz", 1 << 20)
    with pytest.raises(ProtocolError, match="unknown volume format"):
        volume_from_file_bytes("../../etc/passwd", b"", 1 << 20)


def test_an_uploaded_nifti_is_checked_from_its_raw_bytes_as_a_file_is(tmp_path):
    """A half-copied NIfTI upload is refused (ITK would read the missing part as zeros), without the temp path."""
    import SimpleITK as sitk

    sitk.WriteImage(sitk.Image([8, 8, 8], sitk.sitkInt16), str(tmp_path / "v.nii"))
    data = (tmp_path / "v.nii").read_bytes()
    with pytest.raises(InputError, match="the uploaded nii volume") as error:
        volume_from_file_bytes("nii", data[: len(data) - 100], 1 << 20)
    assert "sammed3d-upload-" not in str(error.value)


def test_the_token_rule():
    assert token_matches(None, None)
    assert token_matches("s" * 20, "Bearer " + "s" * 20)
    assert not token_matches("s" * 20, "Bearer " + "t" * 20)
    assert not token_matches("s" * 20, "Basic " + "s" * 20)
    assert not token_matches("s" * 20, None)
    with pytest.raises(InputError, match="refusing to listen on 10.0.0.5 without a token"):
        check_config(ServerConfig("w", host="10.0.0.5"))
    check_config(ServerConfig("w", host="10.0.0.5", token="s" * 20))
    check_config(ServerConfig("w", host="::1"))
    with pytest.raises(InputError, match="--precision must be one of fp32, bf16, fp16"):
        check_config(ServerConfig("w", precision="int8"))


def test_a_short_token_file_is_refused(tmp_path):
    (tmp_path / "t").write_text("short\n")
    with pytest.raises(InputError, match="too short"):
        read_token(tmp_path / "t")


def test_idle_sessions_are_freed_and_then_reported_lost(tiny_model):
    image, truth = sphere_phantom()
    core = WorkerCore(0, lambda im, **o: InteractiveSession(tiny_model, im, **o), Limits(idle_timeout=60), {})
    header, _ = unpack_frame(core.create(_upload(image, None, {})))
    sid = header["session"]
    assert isinstance(core.step(sid, "click", {"point": list(centre_ras(truth))}), bytes)
    assert core.sweep() == [] and core.load() == 1
    import time

    assert core.sweep(time.monotonic() + 61) == [sid] and core.load() == 0
    lost = core.step(sid, "undo", {})
    assert isinstance(lost, Failure) and (lost.status, lost.code) == (404, "session_lost")


def test_unknown_session_options_and_steps_are_refused(tiny_model):
    image, _ = sphere_phantom(size=(24, 24, 24))
    core = WorkerCore(0, lambda im, **o: InteractiveSession(tiny_model, im, **o), Limits(), {})
    refused = core.create(_upload(image, None, {"model_path": "/etc/passwd"}))
    assert isinstance(refused, Failure) and refused.status == 400 and "unknown session options" in refused.message
    header, _ = unpack_frame(core.create(_upload(image, None, {})))
    step = core.step(header["session"], "explode", {})
    assert isinstance(step, Failure) and step.status == 400 and "unknown step" in step.message


@pytest.mark.parametrize("args, fragment", [
    ({"region": "abc"}, "non-empty 'region'"),
    ({"region": [[0, 0, 0], [0, 4, 4]]}, "non-empty 'region'"),
    ({"region": [[0, 0, 0], [4, 4, 4]], "painted": "!!", "erased": ""}, "not base64"),
    ({"region": [[0, 0, 0], [4, 4, 4]], "painted": "AAAA", "erased": "AAAA"}, "do not hold"),
    ({"region": [[20, 20, 20], [8, 8, 8]], "painted": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
      "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
      "AAAAAAAAAAAAAAAAAAAAAAAAAAA=", "erased": ""}, "do not hold"),
])  # fmt: skip
def test_a_malformed_hand_edit_is_refused_and_changes_nothing(tiny_model, args, fragment):
    image, _ = sphere_phantom(size=(24, 24, 24))
    core = WorkerCore(0, lambda im, **o: InteractiveSession(tiny_model, im, **o), Limits(), {})
    header, _ = unpack_frame(core.create(_upload(image, None, {"clicks": [[[1.0, 2.0, 3.0], True]]})))
    assert header["clicks"] == [[[1.0, 2.0, 3.0], True]]  # earlier clicks continued (new voxels)
    refused = core.step(header["session"], "adopt", args)
    assert isinstance(refused, Failure) and refused.status == 400 and fragment in refused.message, refused
    answer, _ = unpack_frame(core.step(header["session"], "undo", {}))
    assert answer["can_undo"] is False and answer["flipped"] is None  # the refused edit left no step


@pytest.mark.parametrize("clicks, fragment", [
    ("abc", "must be a list"), ([[0.0, 0.0, 0.0]] * 10_001, "at most"), ([1.0], "earlier clicks"),
    ([[[1, 2], True]], "three finite coordinates"),
])  # fmt: skip
def test_earlier_clicks_in_an_upload_are_checked(tiny_model, clicks, fragment):
    image, _ = sphere_phantom(size=(24, 24, 24))
    core = WorkerCore(0, lambda im, **o: InteractiveSession(tiny_model, im, **o), Limits(), {})
    refused = core.create(_upload(image, None, {"clicks": clicks}))
    assert isinstance(refused, Failure) and refused.status == 400 and fragment in refused.message, refused
    assert core.load() == 0


def test_a_hand_edit_outside_the_image_is_refused_as_locally(tiny_model):
    from SAMMed3DLib.protocol import hand_edit_args

    image, _ = sphere_phantom(size=(24, 24, 24))
    core = WorkerCore(0, lambda im, **o: InteractiveSession(tiny_model, im, **o), Limits(), {})
    header, _ = unpack_frame(core.create(_upload(image, None, {})))
    block = np.ones((4, 4, 4), bool)
    refused = core.step(header["session"], "adopt", hand_edit_args(((22, 0, 0), (4, 4, 4)), block, ~block))
    assert isinstance(refused, Failure) and refused.status == 400 and "outside the image" in refused.message
    answer, bits = unpack_frame(core.step(header["session"], "adopt", hand_edit_args(((0, 0, 0), (4, 4, 4)),
                                                                                     block, ~block)))  # fmt: skip
    assert answer["can_undo"] and answer["flipped"] == [[0, 0, 0], [4, 4, 4]]


@pytest.mark.parametrize("prop, value", [("origin", (5.0, 0.0, 0.0)), ("spacing", (2.0, 3.0, 3.0)),
                                          ("direction", (0, 1, 0, 1, 0, 0, 0, 0, -1))])
def test_an_initial_mask_off_the_images_grid_is_refused_as_locally(tiny_model, prop, value):
    """The upload carries the mask's own geometry and the session checks it (the server used to paste the image's
    geometry onto any mask of the right size)."""
    image, truth = sphere_phantom(size=(24, 24, 24))
    shifted = sitk.Image(truth)
    getattr(shifted, "Set" + prop.capitalize())(value)
    with pytest.raises(InputError) as local:
        InteractiveSession(tiny_model, image, initial_mask=shifted)
    core = WorkerCore(0, lambda im, **o: InteractiveSession(tiny_model, im, **o), Limits(), {})
    refused = core.create(_upload(image, shifted, {}))
    assert isinstance(refused, Failure) and (refused.status, refused.code) == (400, "bad_input")
    assert refused.message == str(local.value) and f"its {prop}" in refused.message and core.load() == 0
    header, _ = unpack_frame(core.create(_upload(image, truth, {})))
    assert core.load() == 1 and header["clicks"] == []


def test_a_mask_header_without_its_geometry_is_refused():
    image, truth = sphere_phantom(size=(24, 24, 24))
    header, body = unpack_frame(_upload(image, truth, {}))
    header["mask"] = {"packed": True}
    core = WorkerCore(0, lambda im, **o: None, Limits(), {})
    refused = core.create(pack_frame(header, body))
    assert isinstance(refused, Failure) and refused.status == 400
    assert "initial mask header needs size, spacing, origin and direction" in refused.message


def _round_trip(old: np.ndarray, new: np.ndarray) -> np.ndarray:
    """The client's copy of ``old`` after applying the flips the server takes (the server's copy must be ``new``)."""
    server, client = old.copy(), old.copy()
    box, bits = take_flips(server, new)
    assert np.array_equal(server, new)
    if box is not None:
        apply_flips(client[box], unpack_frame(pack_frame({}, bits))[1])
    return client


@pytest.mark.parametrize("seed", range(6))
def test_flips_round_trip_exactly_in_their_tight_box(seed):
    rng = np.random.default_rng(seed)
    shape = tuple(int(n) for n in rng.integers(1, 40, 3))
    old = (rng.random(shape) < 0.5).astype(np.uint8)
    new = old.copy()
    corner = [int(rng.integers(0, n)) for n in shape]
    far = [int(rng.integers(c, n)) for c, n in zip(corner, shape)]
    new[tuple(corner)] ^= 1
    new[tuple(far)] ^= 1 if far != corner else 0
    new[tuple(slice(c, f + 1) for c, f in zip(corner, far))] ^= (rng.random(
        tuple(f + 1 - c for c, f in zip(corner, far))) < 0.1).astype(np.uint8)
    assert np.array_equal(_round_trip(old, new), new)
    box = nonzero_box(old != new)
    flipped = np.argwhere(old != new)
    if flipped.size:  # tight: the box starts at the first and ends at the last flipped voxel on every axis
        assert [(b.start, b.stop) for b in box] == list(zip(flipped.min(0), flipped.max(0) + 1))
    else:
        assert box is None


def test_no_flip_sends_nothing_and_a_full_flip_sends_the_whole_box():
    old = np.zeros((5, 6, 7), np.uint8)
    assert take_flips(old.copy(), old) == (None, b"")
    new = 1 - old
    box, bits = take_flips(old.copy(), new)
    assert box == (slice(0, 5), slice(0, 6), slice(0, 7)) and len(bits) == (5 * 6 * 7 + 7) // 8
    assert np.array_equal(_round_trip(old, new), new)
    with pytest.raises(ProtocolError, match="do not hold"):
        apply_flips(np.zeros((2, 2, 2), np.uint8), bits)


def test_small_bodies_go_uncompressed_and_large_ones_compressed():
    small, large = pack_frame({"a": 1}, b"x" * 100), pack_frame({"a": 1}, b"x" * 100_000)
    assert small.startswith(MAGIC_RAW) and unpack_frame(small) == ({"a": 1}, b"x" * 100)
    assert len(large) < 1000 and unpack_frame(large) == ({"a": 1}, b"x" * 100_000)
    with pytest.raises(ProtocolError, match="limit of 10 bytes"):
        unpack_frame(small, max_body=10)
    rng = np.random.default_rng(0)
    sparse = np.packbits(rng.random(200_000) < 0.001).tobytes()
    dense = np.packbits(rng.random(200_000) < 0.3).tobytes()
    assert worth_compressing(sparse) and not worth_compressing(dense) and not worth_compressing(sparse[:100])


def test_ragged_flips_go_as_they_are_and_a_refinements_shell_compressed():
    """zlib pays only when it shrinks the flips far: a shell shrinks ~50x for ~1 ms, while ragged flips (3x, as
    random test weights give) would cost 8-13 ms of zlib on a 590 KB box to save less time than that on a LAN."""
    rng = np.random.default_rng(0)
    ragged = np.packbits(rng.random(800_000) < 0.03).tobytes()
    assert 2.5 < len(ragged) / len(zlib.compress(ragged, 1)) < 4  # what the rule is about
    z, y, x = np.ogrid[:64, :96, :96]
    distance = np.sqrt((z - 32) ** 2 + (y - 48) ** 2 + (x - 48) ** 2)
    shell = np.packbits((distance <= 26) ^ (distance <= 24)).tobytes()
    assert not worth_compressing(ragged) and worth_compressing(shell)


def test_worker_answers_carry_only_the_flips_of_each_step(tiny_model):
    """Answers in sequence rebuild the local session's masks exactly, each within the engine's changed region."""
    image, truth = sphere_phantom()
    local = InteractiveSession(tiny_model, image)
    core = WorkerCore(0, lambda im, **o: InteractiveSession(tiny_model, im, **o), Limits(), {})
    sid = unpack_frame(core.create(_upload(image, None, {})))[0]["session"]
    client = np.zeros(image.GetSize()[::-1], np.uint8)
    centre = np.array(centre_ras(truth))
    steps = [("click", {"point": list(centre)}), ("click", {"point": list(centre + 3), "positive": False}),
             ("undo", {}), ("redo", {}), ("undo", {}), ("reset", {})]
    for seq, (op, args) in enumerate(steps, 1):
        header, bits = unpack_frame(core.step(sid, op, args))
        expected = {"click": lambda a: local.add_click(a["point"], a.get("positive", True)),
                    "undo": lambda a: local.undo(), "redo": lambda a: local.redo(),
                    "reset": lambda a: local.reset()}[op](args)
        assert header["seq"] == seq and header["changed"] == (
            None if expected.changed is None else [list(v) for v in expected.changed])
        if header["flipped"] is not None:
            (x, y, z), (sx, sy, sz) = header["flipped"]
            apply_flips(client[z : z + sz, y : y + sy, x : x + sx], bits)
        assert np.array_equal(client, sitk.GetArrayViewFromImage(expected.mask)), op


def test_a_lesion_shaped_answer_is_the_same_in_every_session_and_process(tiny_model):
    """bench-server's realistic answer (bench/lesion.py, ``serve --answer lesion``): the worker's one wrapper
    serves other sessions first, yet each click's blob is the local session's, and a refinement flips a shell."""
    from SAMMed3DLib.bench.lesion import LesionShaped

    image, truth = sphere_phantom(size=(64, 64, 64), spacing=(1.5, 1.5, 1.5), centre_ras=(-48.0, -48.0, 48.0))
    served = LesionShaped(tiny_model)
    core = WorkerCore(0, lambda im, **o: InteractiveSession(served, im, **o), Limits(), {})
    centre = np.array(centre_ras(truth))
    other = unpack_frame(core.create(_upload(image, None, {})))[0]["session"]
    for point in (centre, centre + 2):
        core.step(other, "click", {"point": list(point)})
    sid = unpack_frame(core.create(_upload(image, None, {})))[0]["session"]
    local = InteractiveSession(LesionShaped(tiny_model), image)
    client = np.zeros(image.GetSize()[::-1], np.uint8)
    for step, point in enumerate([centre, centre + 4, centre - 4]):
        header, bits = unpack_frame(core.step(sid, "click", {"point": list(point)}))
        (x, y, z), (sx, sy, sz) = header["flipped"]
        before = client.sum()
        apply_flips(client[z : z + sz, y : y + sy, x : x + sx], bits)
        assert np.array_equal(client, sitk.GetArrayViewFromImage(local.add_click(list(point)).mask))
        if step:  # a refinement moves the surface: a shell, far fewer voxels than the blob
            assert 0 < np.unpackbits(np.frombuffer(bits, np.uint8)).sum() < 0.5 * max(before, client.sum())


def test_segment_dataset_never_writes_a_mask_over_its_own_image(tiny_checkpoint, tmp_path, capsys):
    """``--out`` the images folder and ``--redo``: the case's output name is its image's name; the image stays."""
    import json

    import SimpleITK as sitk
    from support.phantoms import centre_ras, sphere_phantom

    from SAMMed3DLib.cli import main

    image, truth = sphere_phantom()
    images, prompts = tmp_path / "images", tmp_path / "prompts"
    images.mkdir()
    prompts.mkdir()
    sitk.WriteImage(image, str(images / "a.nii.gz"))
    controls = [{"position": list(centre_ras(truth)), "positionStatus": "defined"}]
    markups = {"markups": [{"coordinateSystem": "RAS", "controlPoints": controls}]}
    (prompts / "a.mrk.json").write_text(json.dumps(markups))
    before = (images / "a.nii.gz").read_bytes()
    command = ["segment-dataset", "--images", str(images), "--prompts", str(prompts), "--out", str(images),
               "--weights", str(tiny_checkpoint), "--device", "cpu", "--redo"]
    assert main(command) == 1
    assert "1 failed" in capsys.readouterr().out
    assert (images / "a.nii.gz").read_bytes() == before

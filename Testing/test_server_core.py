"""The server's parts without Ray or HTTP: the wire format, the token rule, one worker's sessions."""

import zlib

import numpy as np
import pytest
import SimpleITK as sitk
from support.phantoms import centre_ras, sphere_phantom

from SAMMed3DLib import InteractiveSession
from SAMMed3DLib.errors import InputError
from SAMMed3DLib.protocol import (
    ProtocolError,
    pack_frame,
    raw_volume,
    unpack_bits,
    unpack_frame,
    volume_from_file_bytes,
    volume_from_raw,
)
from SAMMed3DLib.remote import _upload
from SAMMed3DLib.server.config import Limits, ServerConfig, check_config, read_token, token_matches
from SAMMed3DLib.server.core import Failure, WorkerCore


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
        unpack_frame(pack_frame({}, b"0" * 1000)[:-4])
    bomb = pack_frame({}, bytes(10_000_000))
    assert len(bomb) < 50_000  # 10 MB of zeros at level 1
    with pytest.raises(ProtocolError, match="more than the server's limit of 1000000 bytes"):
        unpack_frame(bomb, max_body=1_000_000)
    with pytest.raises(ProtocolError, match="do not hold"):
        unpack_bits(zlib.compress(b"1"), (4, 4, 4))


def test_an_unreadable_file_volume_names_its_format():
    with pytest.raises(InputError, match="the uploaded nrrd volume cannot be read"):
        volume_from_file_bytes("nrrd", b"NRRD0004\nnonsense\n")
    with pytest.raises(ProtocolError, match="unknown volume format"):
        volume_from_file_bytes("../../etc/passwd", b"")


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

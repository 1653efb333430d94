"""The server (``python -m SAMMed3DLib serve``) and its torch-free client, end to end.

One real server for the whole run (the ``ray_server`` fixture, Testing/support/serve.py): a local Ray bound to
127.0.0.1 with two CPU workers on the tiny checkpoint, real HTTP on a free port, a token. Kept small for 2
shared cores: 64³ volumes and the tiny network, also for the 8 concurrent clients × 20 clicks.
"""

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import requests
import SimpleITK as sitk
from support.phantoms import centre_ras, sphere_phantom
from support.serve import MAX_SESSIONS, TOKEN

pytest.importorskip("ray.serve")

from SAMMed3DLib import InteractiveSession  # noqa: E402
from SAMMed3DLib.errors import InputError  # noqa: E402
from SAMMed3DLib.protocol import (  # noqa: E402
    FRAME_TYPE,
    PROTOCOL,
    PROTOCOL_HEADER,
    STEP_HEADER,
    VERSION_HEADER,
    pack_frame,
    unpack_frame,
)
from SAMMed3DLib.remote import RemoteError, RemoteInputError, RemoteSession, ServerConnection  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CONCURRENT_CLIENTS, CONCURRENT_CLICKS = 8, 20
"""8 clients clicking 20 times each at once, each checked bit for bit."""


@pytest.fixture
def server(ray_server):
    """(base URL, process) of the session's running server (Testing/support/serve.py, shared with the Slicer
    tests: Ray starts once per run)."""
    return ray_server.url, ray_server.process


@pytest.fixture
def connection(server):
    return ServerConnection(server[0], TOKEN, recovery_timeout=90.0)


@pytest.fixture(scope="module")
def phantom():
    image, truth = sphere_phantom()
    return image, centre_ras(truth)


def clicks_around(centre, count: int, seed: int = 0):
    """``count`` clicks near ``centre`` (RAS mm), alternating positive/negative after the first."""
    rng = np.random.default_rng(seed)
    return [(tuple(float(c + d) for c, d in zip(centre, rng.normal(0, 12, 3))), i % 3 != 1) for i in range(count)]


def voxels(image: sitk.Image) -> np.ndarray:
    return sitk.GetArrayFromImage(image)


def local_session(tiny_model, image, **options):
    return InteractiveSession(tiny_model, image, **options)


def expected_masks(tiny_model, image, plan):
    """The z-y-x mask after each click of ``plan`` in a local session (what the server must answer)."""
    local = local_session(tiny_model, image)
    return [voxels(local.add_click(point, positive).mask) for point, positive in plan]


# ---------------------------------------------------------------------------------------------- results
def test_remote_steps_are_bit_identical_to_local(connection, tiny_model, phantom):
    image, centre = phantom
    local = local_session(tiny_model, image, history_limit=2)
    with RemoteSession(connection, image, history_limit=2) as remote:
        assert remote.history_limit == local.history_limit == 2
        for i, (point, positive) in enumerate(clicks_around(centre, 4)):
            r, lo = remote.add_click(point, positive, payload=f"p{i}"), local.add_click(point, positive, payload=i)
            assert np.array_equal(voxels(r.mask), voxels(lo.mask))
            assert (r.changed, r.encoded, r.clicks) == (lo.changed, lo.encoded, lo.clicks)
            assert r.payload == f"p{i}" and not r.replayed
            assert r.dropped == tuple(f"p{d}" for d in lo.dropped)
            assert set(r.timings) >= {"preprocess", "encode", "decode", "paste", "total", "engine", "transfer"}
        for op in ("undo", "undo", "undo", "redo", "reset", "undo", "redo", "discard_last_step"):
            r, lo = getattr(remote, op)(), getattr(local, op)()
            assert np.array_equal(voxels(r.mask), voxels(lo.mask)), op
            assert (r.changed, r.clicks, remote.can_undo, remote.can_redo) == (
                lo.changed, lo.clicks, local.can_undo, local.can_redo), op
            assert (r.payload is None) == (lo.payload is None), op


def test_initial_mask_and_auto_extend_reach_the_server(connection, tiny_model, phantom):
    image, centre = phantom
    initial = sitk.Cast(sitk.Image(image) > 200, sitk.sitkUInt8)
    local = local_session(tiny_model, image, initial_mask=initial, auto_extend=True, max_extend_steps=1)
    with RemoteSession(connection, image, initial_mask=initial, auto_extend=True, max_extend_steps=1) as remote:
        assert np.array_equal(voxels(remote.mask), voxels(local.mask))
        for point, positive in clicks_around(centre, 2, seed=3):
            assert np.array_equal(voxels(remote.add_click(point, positive).mask),
                                  voxels(local.add_click(point, positive).mask))
        assert np.array_equal(voxels(remote.reset().mask), voxels(initial))


def test_an_initial_mask_on_another_grid_is_refused_with_the_local_message(connection, tiny_model, phantom):
    image, _ = phantom
    shifted = sitk.Cast(sitk.Image(image) > 200, sitk.sitkUInt8)
    shifted.SetOrigin([o + 6.0 for o in image.GetOrigin()])  # same size, two voxels off: used to be accepted
    with pytest.raises(InputError) as local:
        local_session(tiny_model, image, initial_mask=shifted)
    with pytest.raises(RemoteInputError) as remote:
        RemoteSession(connection, image, initial_mask=shifted)
    assert str(remote.value) == str(local.value) and "but its origin" in str(remote.value)


def test_step_arguments_arrive_in_the_step_header_or_as_a_json_body(connection, phantom):
    image, centre = phantom
    headers = {"Authorization": f"Bearer {TOKEN}", PROTOCOL_HEADER: str(PROTOCOL)}
    with RemoteSession(connection, image) as remote:
        url = f"{connection.url}/v1/sessions/{remote.session_id}"
        by_body = requests.post(url + "/click", json={"point": list(centre)}, headers=headers, timeout=60)
        assert by_body.status_code == 200 and unpack_frame(by_body.content)[0]["clicks"] == [[list(centre), True]]
        bad = requests.post(url + "/undo", headers={**headers, STEP_HEADER: "[1, 2"}, timeout=60)
        assert bad.status_code == 400 and f"the {STEP_HEADER} header is not JSON" in bad.json()["message"]
        by_header = requests.post(url + "/undo", headers={**headers, STEP_HEADER: "{}"}, timeout=60)
        assert by_header.status_code == 200 and unpack_frame(by_header.content)[0]["clicks"] == []


def test_the_client_runs_without_torch(server, tiny_model, phantom, tmp_path):
    image, centre = phantom
    point = clicks_around(centre, 1)[0][0]
    path = tmp_path / "volume.nrrd"
    sitk.WriteImage(image, str(path))
    code = (
        "import json, sys, numpy as np, SimpleITK as sitk\n"
        "from SAMMed3DLib.remote import RemoteSession, ServerConnection\n"
        f"server = ServerConnection({server[0]!r}, {TOKEN!r})\n"
        f"session = RemoteSession(server, sitk.ReadImage({str(path)!r}))\n"
        f"result = session.add_click({list(point)!r})\n"
        "session.close()\n"
        "print(json.dumps({'torch': 'torch' in sys.modules, 'ray': 'ray' in sys.modules,"
        " 'sum': int(sitk.GetArrayViewFromImage(result.mask).sum())}))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["torch"] is False and report["ray"] is False
    assert report["sum"] == int(voxels(local_session(tiny_model, image).add_click(point).mask).sum())


def click_both(remote, local, clicks) -> None:
    """The same clicks in the remote and the local session."""
    for point, positive in clicks:
        remote.add_click(point, positive)
        local.add_click(point, positive)


def test_a_missed_answer_makes_the_client_replay_instead_of_applying_stale_flips(connection, tiny_model, phantom):
    image, centre = phantom
    clicks = clicks_around(centre, 3, seed=5)
    local = local_session(tiny_model, image)
    with RemoteSession(connection, image) as remote:
        click_both(remote, local, clicks[:2])
        # a step whose answer never reaches this client (as after a time-out): the server's copy moves on
        connection.request("POST", f"/sessions/{remote.session_id}/click", json={"point": list(centre)})
        result = remote.add_click(*clicks[2])
        expected = local.add_click(*clicks[2])
        assert result.replayed and "missed an answer" in result.message
        assert np.array_equal(voxels(result.mask), voxels(expected.mask))
        assert remote.clicks == local.clicks


def test_a_killed_worker_is_recovered_by_replay(server, connection, tiny_model, phantom):
    image, centre = phantom
    clicks = clicks_around(centre, 4, seed=5)
    local = local_session(tiny_model, image)
    with RemoteSession(connection, image) as remote:
        click_both(remote, local, clicks[:2])
        remote.undo()
        local.undo()
        worker = int(remote.session_id.split("-")[0][1:])
        pid = next(w["pid"] for w in connection.health()["workers"] if w["index"] == worker)
        os.kill(pid, signal.SIGKILL)
        result = remote.add_click(*clicks[2])
        expected = local.add_click(*clicks[2])
        assert result.replayed and "replayed" in result.message
        assert np.array_equal(voxels(result.mask), voxels(expected.mask))
        assert result.clicks == expected.clicks and remote.can_redo == local.can_redo
        again = remote.add_click(*clicks[3])
        assert not again.replayed
        assert np.array_equal(voxels(again.mask), voxels(local.add_click(*clicks[3]).mask))


def test_concurrent_clients_each_get_their_own_masks(connection, tiny_model, phantom):
    """8 clients x 20 clicks at once, every mask checked against a local session of the same clicks."""
    image, centre = phantom
    plans = [clicks_around(centre, CONCURRENT_CLICKS, seed=10 + c) for c in range(CONCURRENT_CLIENTS)]
    expected = [expected_masks(tiny_model, image, plan) for plan in plans]
    failures, checked = [], []

    def client(index: int) -> None:
        try:
            with RemoteSession(ServerConnection(connection.url, TOKEN), image) as remote:
                for step, (point, positive) in enumerate(plans[index]):
                    if not np.array_equal(voxels(remote.add_click(point, positive).mask), expected[index][step]):
                        failures.append((index, step))
                    checked.append((index, step))
        except Exception as exc:  # reported below: a thread's exception would otherwise vanish
            failures.append((index, repr(exc)))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(CONCURRENT_CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(600)
    assert not failures
    assert len(checked) == CONCURRENT_CLIENTS * CONCURRENT_CLICKS  # no client still running or silently cut short


def test_the_workers_run_at_the_servers_priority(connection):
    """Ray starts its workers at nice 15: any normal-priority process on the host then took the CPU from the
    clicks (the worker's engine ran 4x slower than the same clicks beside it on a loaded 2-core machine)."""
    own = os.getpriority(os.PRIO_PROCESS, 0)  # the server was started from this process: same niceness
    workers = connection.health()["workers"]
    assert workers and all(os.getpriority(os.PRIO_PROCESS, w["pid"]) == own for w in workers)


def test_a_workers_steps_run_on_its_one_engine_thread(tiny_checkpoint, phantom, monkeypatch):
    """Ray runs each call of a threaded actor on whichever of its threads is free: steps rotated over many
    threads, each with its own torch thread pool and allocator arena (the engine 20-50 % slower)."""
    from SAMMed3DLib.remote import _upload
    from SAMMed3DLib.server import core
    from SAMMed3DLib.server.config import Limits
    from SAMMed3DLib.server.worker import EngineWorker

    image, centre = phantom
    ran_on, original = [], core.run_op
    monkeypatch.setattr(core, "run_op", lambda *a: ran_on.append(threading.get_ident()) or original(*a))
    import torch

    worker = EngineWorker(0, str(tiny_checkpoint), "cpu", Limits(), torch.get_num_threads())
    sid = unpack_frame(worker.create(_upload(image, None, {})))[0]["session"]
    callers = []
    for point, positive in clicks_around(centre, 4, seed=7):  # one Ray thread after another, as a threaded actor
        args = {"point": list(point), "positive": positive}
        caller = threading.Thread(target=worker.step, args=(sid, "click", args))
        caller.start()
        caller.join()
        callers.append(caller.ident)
    assert len(ran_on) == 4 and len(set(ran_on)) == 1 and not set(ran_on) & set(callers)
    assert unpack_frame(worker.step(sid, "undo", {}))[0]["seq"] == 5


# ---------------------------------------------------------------------------------------------- refusals
def test_a_request_without_the_right_token_gets_401(server, phantom):
    url = server[0] + "/v1/models"
    assert requests.get(url, timeout=10).status_code == 401
    wrong = requests.get(url, headers={"Authorization": "Bearer " + "x" * len(TOKEN)}, timeout=10)
    assert wrong.status_code == 401 and "token" in wrong.json()["message"]
    with pytest.raises(RemoteError, match="HTTP 401"):
        RemoteSession(ServerConnection(server[0], "wrong-token-wrong-token"), phantom[0])


def test_a_client_of_another_protocol_gets_one_message_with_both_versions(server):
    headers = {"Authorization": f"Bearer {TOKEN}", PROTOCOL_HEADER: "99", VERSION_HEADER: "9.9.9"}
    answer = requests.get(server[0] + "/v1/models", headers=headers, timeout=10)
    assert answer.status_code == 409
    message = answer.json()["message"]
    assert "9.9.9 (protocol 99)" in message and f"(protocol {PROTOCOL})" in message


def test_an_oversized_upload_gets_413(server):
    noise = np.random.default_rng(0).integers(0, 255, 3 * 2**20, dtype=np.uint8).tobytes()
    answer = requests.post(server[0] + "/v1/sessions", data=pack_frame({"volume": {}}, noise, compress=False),
                           headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": FRAME_TYPE}, timeout=30)
    assert answer.status_code == 413 and "limit" in answer.json()["message"]


def test_malformed_volumes_get_400_with_the_engines_message(connection):
    constant = sitk.Image(16, 16, 16, sitk.sitkInt16)
    with pytest.raises(RemoteInputError, match="the image is empty: every voxel is 0"):
        RemoteSession(connection, constant)
    frame = pack_frame({"volume": {"format": "raw", "dtype": "int16", "size": [8, 8, 8], "spacing": [1, 1, 1],
                                   "origin": [0, 0, 0], "direction": [1, 0, 0, 0, 1, 0, 0, 0, 1], "length": 10}},
                       b"0123456789")
    answer = requests.post(connection.url + "/v1/sessions", data=frame,
                           headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": FRAME_TYPE}, timeout=30)
    assert answer.status_code == 400 and "do not hold" in answer.json()["message"]


def test_a_bad_click_gets_400_and_changes_nothing(connection, phantom):
    with RemoteSession(connection, phantom[0]) as remote:
        with pytest.raises(InputError, match="outside"):
            remote.add_click((5000.0, 0.0, 0.0))
        assert remote.clicks == [] and not remote.can_undo


def test_the_session_limit_gets_503(connection, phantom):
    sessions = []
    try:
        with pytest.raises(RemoteError, match="limit of 6 sessions") as caught:
            for _ in range(2 * MAX_SESSIONS + 1):
                sessions.append(RemoteSession(connection, phantom[0]))
        assert caught.value.status == 503 and len(sessions) == 2 * MAX_SESSIONS
        assert {s.session_id[:2] for s in sessions} == {"w0", "w1"}  # least-loaded placement used both
    finally:
        for s in sessions:
            s.close()


def test_an_unknown_session_gets_404(connection):
    with pytest.raises(RemoteError, match="does not exist"):
        connection.request("POST", "/sessions/w0-nosuchsession/undo", json={})


def test_a_public_address_without_a_token_is_refused_before_ray_starts(tiny_checkpoint):
    done = subprocess.run(
        [sys.executable, "-m", "SAMMed3DLib", "serve", "--weights", str(tiny_checkpoint), "--host", "0.0.0.0"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 2 and "refusing to listen on 0.0.0.0 without a token" in done.stderr


def test_a_precision_the_device_lacks_is_refused_before_ray_starts(tiny_checkpoint):
    done = subprocess.run(
        [sys.executable, "-m", "SAMMed3DLib", "serve", "--weights", str(tiny_checkpoint), "--device", "cpu",
         "--precision", "fp16"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2 and done.stderr.startswith("error: fp16 is a GPU option")


def test_missing_weights_are_reported_before_ray_starts(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "SAMMed3DLib", "serve", "--weights", str(tmp_path / "missing.pth")],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 2 and done.stderr.startswith("error: checkpoint not found")


def test_a_port_in_use_is_one_line(tiny_checkpoint):
    """Serve's proxy cannot bind the port: one message instead of Ray's traceback."""
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "SAMMed3DLib", "serve", "--weights", str(tiny_checkpoint), "--port", str(port)],
            cwd=ROOT, capture_output=True, text=True, timeout=300,
        )
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert f"error: cannot listen on 127.0.0.1:{port}: another program uses the port" in done.stderr


# ---------------------------------------------------------------------------------------------- datasets
def _markups(path: Path, points) -> None:
    controls = [{"position": list(p), "positionStatus": "defined"} for p in points]
    path.write_text(json.dumps({"markups": [{"coordinateSystem": "RAS", "controlPoints": controls}]}))


def test_a_dataset_on_the_server_survives_a_corrupt_case_and_reruns_only_what_is_missing(
    server, tiny_model, phantom, tmp_path, capsys
):
    from SAMMed3DLib.cli import main

    image, centre = phantom
    images, prompts, out = tmp_path / "images", tmp_path / "prompts", tmp_path / "out"
    images.mkdir()
    prompts.mkdir()
    plan = clicks_around(centre, 3, seed=20)
    for name in ("a", "b"):
        sitk.WriteImage(image, str(images / f"{name}.nii.gz"))
        _markups(prompts / f"{name}.mrk.json", [p for p, s in plan if s])
        _markups(prompts / f"{name}.negative.mrk.json", [p for p, s in plan if not s])
    (images / "broken.nrrd").write_bytes(b"NRRD0004\nnot really\n")
    _markups(prompts / "broken.mrk.json", [centre])
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    command = ["segment-dataset", "--images", str(images), "--prompts", str(prompts), "--out", str(out),
               "--server", server[0], "--token-file", str(token_file)]

    assert main(command) == 1
    table = capsys.readouterr().out
    assert "3 cases: 2 done, 0 skipped (already done), 1 failed" in table and "broken" in table
    local = local_session(tiny_model, image)
    for point, positive in sorted(plan, key=lambda c: not c[1]):  # positives first, as the command sends them
        local.add_click(point, positive)
    for name in ("a", "b"):
        assert np.array_equal(voxels(sitk.ReadImage(str(out / f"{name}.nii.gz"))), voxels(local.mask))
    assert sorted(p.name for p in out.iterdir()) == ["a.nii.gz", "b.nii.gz", "segment-dataset-report.json"]

    kept = (out / "a.nii.gz").stat().st_mtime_ns
    (out / "b.nii.gz").unlink()  # as if the first run had been interrupted before b
    assert main(command) == 1
    report = json.loads((out / "segment-dataset-report.json").read_text())
    assert {c["case"]: c["status"] for c in report["cases"]} == {"a": "skipped", "b": "done", "broken": "failed"}
    assert (out / "a.nii.gz").stat().st_mtime_ns == kept
    assert np.array_equal(voxels(sitk.ReadImage(str(out / "b.nii.gz"))), voxels(local.mask))


def test_bench_server_compares_local_and_remote_clicks(server, tiny_checkpoint, tmp_path, capsys):
    from SAMMed3DLib.cli import main

    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    out = tmp_path / "bench.json"
    assert main(["bench-server", "--weights", str(tiny_checkpoint), "--server", server[0], "--token-file",
                 str(token_file), "--size", "48,48,32", "--clicks", "3", "--concurrency", "1,2",
                 "--json", str(out)]) == 0
    figures = json.loads(out.read_text())
    network = figures["answers"]["network"]  # --server: the one answer that server gives
    assert set(figures["answers"]) == {"network"}
    assert network["identical_masks"] is True and set(network["concurrency"]) == {"1", "2"}
    printed = capsys.readouterr().out
    assert "overhead" in printed and figures["machine"]["cpu"] in printed
    # A --json that cannot be written is refused before the run, as by the other benchmarks.
    assert main(["bench-server", "--weights", str(tiny_checkpoint), "--server", server[0], "--token-file",
                 str(token_file), "--json", str(tmp_path / "no-such-folder" / "bench.json")]) == 2
    assert "--json" in capsys.readouterr().err


def test_evaluate_a_dataset_on_the_server(server, tiny_model, tmp_path, capsys):
    from SAMMed3DLib.bench.evaluation import simulate
    from SAMMed3DLib.cli import main

    image, truth = sphere_phantom(size=(48, 48, 40), centre_ras=(-70.0, -70.0, 60.0))
    for sub in ("imagesTr", "labelsTr"):
        (tmp_path / "data" / sub).mkdir(parents=True)
    sitk.WriteImage(image, str(tmp_path / "data" / "imagesTr" / "one.nii.gz"))
    sitk.WriteImage(truth, str(tmp_path / "data" / "labelsTr" / "one.nii.gz"))
    sitk.WriteImage(image, str(tmp_path / "data" / "imagesTr" / "nolabel.nii.gz"))
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    command = ["evaluate", "--dataset", str(tmp_path / "data"), "--out", str(tmp_path / "out"), "--clicks", "3",
               "--server", server[0], "--token-file", str(token_file)]
    assert main(command) == 1
    out = capsys.readouterr().out
    assert "2 cases: 1 done, 0 skipped (already done), 1 failed" in out and "mean Dice over 1 structure\n" in out
    local = [s.dice for s in simulate(tiny_model, image, sitk.GetArrayFromImage(truth) > 0, 3)]
    assert json.loads((tmp_path / "out" / "one.json").read_text())["dice"] == {"1": local}
    assert main(command) == 1 and "1 skipped (already done)" in capsys.readouterr().out

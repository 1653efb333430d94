"""A worker's process, without Ray: its thread count, the order its engine runs steps in, and Ray's token file."""

import json
import os
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from support.phantoms import centre_ras, sphere_phantom

from SAMMed3DLib import InteractiveSession
from SAMMed3DLib.errors import InputError
from SAMMed3DLib.protocol import unpack_frame
from SAMMed3DLib.remote import _upload
from SAMMed3DLib.server import core
from SAMMed3DLib.server.config import Limits
from SAMMed3DLib.server.core import WorkerCore
from SAMMed3DLib.server.raytoken import secure_token_file

ROOT = Path(__file__).resolve().parents[1]


def test_a_cpu_worker_uses_its_share_of_the_cores(tiny_checkpoint):
    """Ray starts a worker that reserves one CPU with OMP_NUM_THREADS=1: the server clicked on one core."""
    code = (
        "import json, os\n"
        "from SAMMed3DLib.server.config import Limits\n"
        "from SAMMed3DLib.server.worker import EngineWorker\n"
        f"alone = EngineWorker(0, {str(tiny_checkpoint)!r}, 'cpu', Limits(), None, share=1).info()['threads']\n"
        f"pinned = EngineWorker(0, {str(tiny_checkpoint)!r}, 'cpu', Limits(), 1, share=1).info()['threads']\n"
        "print(json.dumps([alone, pinned, len(os.sched_getaffinity(0))]))\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    alone, pinned, cores = json.loads(done.stdout.strip().splitlines()[-1])
    assert (alone, pinned) == (cores, 1)


def test_a_refinement_waits_for_at_most_the_encode_already_running(tiny_model, monkeypatch):
    """Sessions 1 and 2 queue their first clicks (encodes) while session 0's encode runs; session 3 then queues a
    refinement: it runs next, before the queued encodes."""
    from SAMMed3DLib.server.engine import EngineThread

    image, truth = sphere_phantom()
    centre = list(centre_ras(truth))
    engine = EngineThread()
    worker = WorkerCore(0, lambda im, **o: InteractiveSession(tiny_model, im, **o), Limits(), {}, run=engine.run)
    sids = [unpack_frame(worker.create(_upload(image, None, {})))[0]["session"] for _ in range(4)]
    assert isinstance(worker.step(sids[3], "click", {"point": centre}), bytes)  # its next click refines
    release, order, original = threading.Event(), [], core.run_op

    def recorded(session, op, args):
        order.append(args["payload"])
        if args["payload"] == 0:
            release.wait(120)
        return original(session, op, args)

    monkeypatch.setattr(core, "run_op", recorded)
    callers = []

    def click(index: int, until) -> None:
        """Session ``index`` clicks (on a thread of its own, as Ray's are); back once ``until()`` holds."""
        caller = threading.Thread(target=worker.step, args=(sids[index], "click", {"point": centre, "payload": index}))
        caller.start()
        callers.append(caller)
        deadline = time.monotonic() + 60
        while not until() and time.monotonic() < deadline:
            time.sleep(0.01)

    click(0, lambda: order == [0])  # running, held
    for index in (1, 2, 3):
        click(index, lambda queued=index: engine.pending() == queued)
    release.set()
    for caller in callers:
        caller.join(120)
    assert order == [0, 3, 1, 2]


# ---------------------------------------------------------------------------------------------- Ray's token
@pytest.fixture
def token_path(tmp_path, monkeypatch):
    for variable in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("RAY_AUTH_TOKEN_PATH", raising=False)
    return tmp_path / ".ray" / "auth_token"


def test_a_new_local_rays_token_is_created_private(token_path):
    assert secure_token_file(create=True) is None
    assert stat.S_IMODE(token_path.stat().st_mode) == 0o600 and len(token_path.read_text()) == 64
    assert stat.S_IMODE(token_path.parent.stat().st_mode) == 0o700


def test_a_token_others_can_read_is_made_private_or_refused(token_path, monkeypatch):
    token_path.parent.mkdir()
    token_path.write_text("secret-token")
    token_path.chmod(0o644)
    note = secure_token_file(create=False)
    assert "mode 0644" in note and stat.S_IMODE(token_path.stat().st_mode) == 0o600
    assert token_path.read_text() == "secret-token"
    token_path.chmod(0o640)
    monkeypatch.setattr(os, "geteuid", lambda: token_path.stat().st_uid + 1)  # as if another user owned it
    with pytest.raises(InputError, match="belongs to another user.*chmod 600"):
        secure_token_file(create=False)
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    assert secure_token_file(create=True) is None  # Ray's token authentication is off: no file to guard

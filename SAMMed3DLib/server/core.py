"""One worker's interactive sessions: decode uploads, run steps, answer with the voxels that flipped (no Ray).

Every public method returns either frame bytes or an :class:`Failure` (status, code, message), never raises for
the client's mistakes, so that the error crosses the Ray boundary as data and the gateway maps it to HTTP.
"""

import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Union

import numpy as np
import SimpleITK as sitk

from .. import __version__
from ..errors import InputError, SAMMed3DError
from ..protocol import TooLargeError, box_region, hand_edit, pack_frame, take_flips, worth_compressing
from ..regions import read_region, zyx_slices
from .config import Limits
from .engine import REFINE, priority
from .uploads import decode_upload


@dataclass(frozen=True)
class Failure:
    """An error for the client: HTTP status, a machine-readable code and one message."""

    status: int
    code: str
    message: str


Answer = Union[bytes, Failure]
Runner = Callable[[Callable[[], Answer], int], Answer]
"""Runs a step's work with a priority (:mod:`.engine`) and returns its answer: in the calling thread
(``inline``), or on the worker's engine thread."""


def inline(work: Callable[[], Answer], rank: int = REFINE) -> Answer:
    return work()


@dataclass
class _Entry:
    """A session, its lock, and the mask its client holds (z-y-x 0/1: each answer sends only what differs)."""

    session: Any
    mirror: np.ndarray
    lock: threading.Lock = field(default_factory=threading.Lock)
    last_used: float = field(default_factory=time.monotonic)
    seq: int = 0


class WorkerCore:
    """The sessions of one worker on one model. ``session_factory(image, **options)`` makes a session; ``run``
    runs each step's work (the engine and the answer), after the caller has claimed the session."""

    def __init__(self, index: int, session_factory: Callable[..., Any], limits: Limits, describe: Dict[str, Any],
                 run: Runner = inline):
        self.index = index
        self._factory = session_factory
        self._run = run
        self.limits = limits
        self.describe = dict(describe)
        self._sessions: Dict[str, _Entry] = {}
        self._guard = threading.Lock()

    # ------------------------------------------------------------------ bookkeeping
    def load(self) -> int:
        """Open sessions (the gateway sends new sessions to the worker with the fewest)."""
        with self._guard:
            return len(self._sessions)

    def info(self) -> Dict[str, Any]:
        import os

        return {"index": self.index, "sessions": self.load(), "pid": os.getpid(), "version": __version__,
                **self.describe}

    def sweep(self, now: Optional[float] = None) -> List[str]:
        """Close sessions idle for longer than the idle time-out; their ids."""
        now = time.monotonic() if now is None else now
        with self._guard:
            stale = [sid for sid, e in self._sessions.items()
                     if now - e.last_used > self.limits.idle_timeout and not e.lock.locked()]
            for sid in stale:
                del self._sessions[sid]
        return stale

    def close(self, sid: str) -> Answer:
        with self._guard:
            found = self._sessions.pop(sid, None) is not None
        return pack_frame({"closed": found}) if found else _lost(sid)

    # ------------------------------------------------------------------ sessions
    def create(self, upload: bytes) -> Answer:
        """A new session on the uploaded volume (see :mod:`SAMMed3DLib.protocol`); answers its id."""
        self.sweep()
        if self.load() >= self.limits.max_sessions:
            return _full(self.limits.max_sessions)
        try:
            image, mask, options = decode_upload(upload, self.limits.max_upload)
            session = self._factory(image, initial_mask=mask, **options)
        except TooLargeError as exc:
            return Failure(413, "too_large", str(exc))
        except SAMMed3DError as exc:
            return Failure(400, "bad_input", str(exc))
        sid = f"w{self.index}-{secrets.token_hex(16)}"
        with self._guard:
            if len(self._sessions) >= self.limits.max_sessions:
                return _full(self.limits.max_sessions)
            self._sessions[sid] = _Entry(session, sitk.GetArrayFromImage(session.mask))
        return pack_frame({"session": sid, "worker": self.index, "version": __version__,
                           "history_limit": session.history_limit, **_state(session)})

    def step(self, sid: str, op: str, args: Dict[str, Any]) -> Answer:
        """Run ``op`` (click, undo, redo, reset, discard, focus, adopt) on session ``sid``: the step's answer frame."""
        with self._guard:
            entry = self._sessions.get(sid)
        if entry is None:
            return _lost(sid)
        if not entry.lock.acquire(blocking=False):
            return Failure(409, "busy", "this session is still working on the previous step; send one step at a time")
        try:
            return self._run(lambda: _answer_step(entry, op, args), priority(entry.session, op, args))
        finally:
            entry.last_used = time.monotonic()
            entry.lock.release()


def _answer_step(entry: _Entry, op: str, args: Dict[str, Any]) -> Answer:
    try:
        return answer(entry, run_op(entry.session, op, args))
    except SAMMed3DError as exc:
        return Failure(400, "bad_input", str(exc))


def run_op(session: Any, op: str, args: Dict[str, Any]) -> Any:
    """Call the session's step for ``op``; returns its StepResult (or None for focus)."""
    payload = args.get("payload")
    if op == "click":
        point, positive = args.get("point"), args.get("positive", True)
        if not isinstance(positive, bool):
            raise InputError(f"'positive' must be true or false, got {positive!r}")
        if "auto_extend" in args:
            session.auto_extend = bool(args["auto_extend"])
        return session.add_click(point, positive, payload=payload)
    if op == "reset":
        return session.reset(payload=payload)
    if op in ("undo", "redo", "discard"):
        return {"undo": session.undo, "redo": session.redo, "discard": session.discard_last_step}[op]()
    if op == "focus":
        session.focus(args.get("points"))
        return None
    if op == "adopt":
        region, painted, erased = hand_edit(args)
        return session.adopt(region, painted, erased, payload=payload)
    raise InputError(f"unknown step {op!r}")


def answer(entry: _Entry, result: Any) -> bytes:
    """The answer frame of a step: its state, and the voxels that flipped inside the engine's changed region
    (their tight box, bit-packed XOR against the mask the client holds; ``entry.mirror`` follows)."""
    entry.seq += 1
    base = {"seq": entry.seq, **_state(entry.session)}
    if result is None:  # focus: no step, nothing changed
        return pack_frame({"changed": None, "flipped": None, "timings": {}, "encoded": False, "payload": None,
                           "dropped": [], **base})
    start = time.perf_counter()
    region, flipped, bits = result.changed, None, b""
    if region is not None:
        window = zyx_slices(region)
        box, bits = take_flips(entry.mirror[window], read_region(result.mask, region))
        flipped = None if box is None else box_region(region[0], box)
    compress = worth_compressing(bits)
    header = {
        "changed": None if region is None else [list(region[0]), list(region[1])],
        "flipped": None if flipped is None else [list(flipped[0]), list(flipped[1])],
        "timings": {**result.timings, "flips": time.perf_counter() - start},
        "encoded": bool(result.encoded),
        "payload": result.payload,
        "dropped": list(result.dropped),
        **base,
    }
    return pack_frame(header, bits, compress=compress)


def _state(session: Any) -> Dict[str, Any]:
    return {
        "clicks": [[list(point), bool(positive)] for point, positive in session.clicks],
        "can_undo": session.can_undo,
        "can_redo": session.can_redo,
    }


def _lost(sid: str) -> Failure:
    return Failure(404, "session_lost", f"session {sid} does not exist on this server (closed after being idle, or "
                                        "the server or its worker restarted)")


def _full(limit: int) -> Failure:
    return Failure(503, "full", f"every worker already holds its limit of {limit} sessions; close a session "
                                "or try again later (the server's --max-sessions sets the limit)")

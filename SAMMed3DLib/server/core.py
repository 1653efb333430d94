"""One worker's interactive sessions: decode uploads, run steps, answer with the voxels that flipped (no Ray).

Every public method returns either frame bytes or an :class:`Failure` (status, code, message), never raises for
the client's mistakes, so that the error crosses the Ray boundary as data and the gateway maps it to HTTP.
"""

import os
import secrets
import tempfile
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

import numpy as np
import SimpleITK as sitk

from .. import __version__
from ..cli.images import read_image
from ..errors import InputError, SAMMed3DError
from ..protocol import (
    FILE_FORMATS,
    ProtocolError,
    box_region,
    hand_edit,
    mask_from_packed,
    pack_frame,
    take_flips,
    unpack_frame,
    volume_from_raw,
    worth_compressing,
)
from ..regions import read_region, zyx_slices
from .config import Limits

SESSION_OPTIONS = ("auto_extend", "max_extend_steps", "history_limit", "clicks")
"""Session options a client may set (keyword arguments of InteractiveSession)."""


@dataclass(frozen=True)
class Failure:
    """An error for the client: HTTP status, a machine-readable code and one message."""

    status: int
    code: str
    message: str


Answer = Union[bytes, Failure]
Runner = Callable[[Callable[[], Answer]], Answer]
"""Runs a step's work and returns its answer: in the calling thread (``inline``), or the worker's engine thread."""


def inline(work: Callable[[], Answer]) -> Answer:
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
            return self._run(lambda: _answer_step(entry, op, args))
        finally:
            entry.last_used = time.monotonic()
            entry.lock.release()


def _answer_step(entry: _Entry, op: str, args: Dict[str, Any]) -> Answer:
    try:
        return answer(entry, run_op(entry.session, op, args))
    except SAMMed3DError as exc:
        return Failure(400, "bad_input", str(exc))


def decode_upload(upload: bytes, max_bytes: int) -> Tuple[sitk.Image, Optional[sitk.Image], Dict[str, Any]]:
    """(volume, initial mask or None, session options) of a session upload frame."""
    header, body = unpack_frame(upload, max_body=max_bytes)
    volume = header.get("volume")
    if not isinstance(volume, dict) or not isinstance(volume.get("length"), int):
        raise InputError("the upload's header needs a 'volume' object with the byte 'length' of the volume")
    length = volume["length"]
    data, rest = body[:length], body[length:]
    fmt = volume.get("format")
    image = volume_from_raw(volume, data) if fmt == "raw" else volume_from_file_bytes(str(fmt), data)
    mask = None
    if header.get("mask") is not None:  # on its own grid: the session refuses one off the volume's, as locally
        mask = mask_from_packed(header["mask"], rest)
    options = header.get("options") or {}
    unknown = set(options) - set(SESSION_OPTIONS)
    if unknown:
        raise InputError(f"unknown session options {sorted(unknown)}; known: {', '.join(SESSION_OPTIONS)}")
    return image, mask, options


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


def volume_from_file_bytes(fmt: str, data: bytes) -> sitk.Image:
    """Read the bytes of a single-file image (``fmt`` a key of ``FILE_FORMATS``) through a private temp file,
    with the command line's reader: a short NIfTI, NaN/Inf voxels or a header promising terabytes are refused
    from the raw bytes before ITK reads them, as for a file given on the command line."""
    if fmt not in FILE_FORMATS:
        raise ProtocolError(f"unknown volume format {fmt!r}; use raw or one of {', '.join(FILE_FORMATS)}")
    with tempfile.TemporaryDirectory(prefix="sammed3d-upload-") as folder:
        path = os.path.join(folder, "volume" + FILE_FORMATS[fmt])
        with open(path, "wb") as handle:
            handle.write(data)
        try:
            return read_image(path)
        except InputError as exc:  # the message names the private temp file: name the upload instead
            reason = str(exc).replace(f"{path} is not an image SimpleITK can read", "cannot be read").replace(path, "")
            raise InputError(f"the uploaded {fmt} volume {reason.strip()}") from exc

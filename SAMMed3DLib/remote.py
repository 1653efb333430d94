"""A session on a SAM-Med3D server (``python -m SAMMed3DLib serve``), without torch: requests, numpy, SimpleITK.

``RemoteSession(ServerConnection(url, token), image)`` has the steps and results of the local
:class:`~SAMMed3DLib.InteractiveSession` (``add_click``, ``undo``, ``redo``, ``reset``, ``discard_last_step``,
``adopt``, ``focus``; ``mask``, ``clicks``, ``can_undo``, ``can_redo``); its results are :class:`RemoteStepResult`, the
engine's StepResult fields plus ``replayed`` / ``message`` / ``flipped``. The volume is uploaded once; each step
brings back only the voxels that flipped (their tight box, bit-packed). If the server loses the session (restart,
dead worker, idle time-out, or an answer that never arrived), the next step
opens a new session, replays every step so far, and says so in its result.

Points are RAS mm; regions ``((x0, y0, z0), (sx, sy, sz))`` in SimpleITK index order.
"""

import contextlib
import itertools
import json
import time
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import requests
import SimpleITK as sitk

from . import __version__
from .errors import InputError, SAMMed3DError
from .protocol import (
    API_PREFIX,
    FRAME_TYPE,
    PROTOCOL,
    PROTOCOL_HEADER,
    STEP_HEADER,
    STEP_HEADER_MAX,
    VERSION_HEADER,
    ProtocolError,
    VersionMismatchError,
    apply_flips,
    as_clicks,
    as_region,
    geometry_of,
    hand_edit_args,
    pack_bits,
    pack_frame,
    raw_volume,
    unpack_frame,
    version_message,
)
from .regions import write_region, zyx_slices
from .wording import count

PAYLOAD_STEPS = ("click", "reset", "adopt")
"""Steps that carry the caller's payload (the server keeps a number standing for it)."""
LOST = ("session_lost", "worker_lost")
"""Error codes after which the client re-opens the session and replays it."""
RETRY_PAUSE = 0.5
"""Seconds between tries while a server that answered before is restarting."""


class RemoteError(SAMMed3DError):
    """The server refused a request or could not be reached; ``status`` is the HTTP status (0: no answer)."""

    def __init__(self, message: str, status: int = 0, code: str = "") -> None:
        super().__init__(message)
        self.status, self.code = status, code


class RemoteInputError(InputError):
    """The engine on the server rejected an input (HTTP 400); the message is the engine's."""


class SessionLostError(RemoteError):
    """The server no longer has the session (or its worker)."""


@dataclass(frozen=True)
class RemoteStepResult:
    """The engine's StepResult plus whether the session had to be re-opened and replayed first.

    ``timings`` (s): the engine's preprocess/encode/decode/paste, ``engine`` its total, ``flips`` the server's
    diff of the mask, ``apply`` the client's, ``total`` the whole round trip seen by the client, ``transfer``
    total minus engine (network, HTTP, Serve, diffing). ``flipped``: the tight
    box of the voxels this step really flipped (within ``changed``), None if none."""

    mask: sitk.Image
    changed: Optional[Tuple[Tuple[int, int, int], Tuple[int, int, int]]]
    timings: Mapping[str, float]
    encoded: bool
    clicks: Tuple[Tuple[Tuple[float, float, float], bool], ...]
    payload: Any = None
    dropped: Tuple[Any, ...] = ()
    replayed: bool = False
    message: str = ""
    flipped: Optional[Tuple[Tuple[int, int, int], Tuple[int, int, int]]] = None


class ServerConnection:
    """A server's base URL (e.g. ``http://gpu-host:8000``) and bearer token; checks versions on first use."""

    def __init__(self, url: str, token: Optional[str] = None, *, timeout: float = 300.0,
                 recovery_timeout: float = 60.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.recovery_timeout = recovery_timeout
        self._http = requests.Session()
        self._http.headers[PROTOCOL_HEADER] = str(PROTOCOL)
        self._http.headers[VERSION_HEADER] = __version__
        if token:
            self._http.headers["Authorization"] = f"Bearer {token}"
        self._checked = False

    def version(self) -> Dict[str, Any]:
        """The server's ``{"version", "protocol"}``; VersionMismatchError naming both versions if incompatible."""
        info = self._json("GET", "/version")
        if info.get("protocol") != PROTOCOL:
            server = info.get("version"), info.get("protocol")
            raise VersionMismatchError(version_message(__version__, PROTOCOL, *server))
        self._checked = True
        return info

    def health(self) -> Dict[str, Any]:
        """``{"status", "version", "protocol"}``, plus ``workers`` (weights, devices, process ids, sessions) for a
        connection with the server's token."""
        return self._json("GET", "/health")

    def models(self) -> List[Dict[str, Any]]:
        """The workers' weights and devices (needs the token): what "Test connection" shows."""
        return self._json("GET", "/models")["models"]

    def close(self) -> None:
        self._http.close()

    def _json(self, method: str, path: str) -> Dict[str, Any]:
        return self.request(method, path).json()

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        """``method`` on ``/v1<path>``; a RemoteError subclass for every failure, with the server's message."""
        if not self._checked and path != "/version":
            self.version()
        deadline = time.monotonic() + self.recovery_timeout
        while True:
            try:
                response = self._http.request(method, self.url + API_PREFIX + path, timeout=self.timeout, **kwargs)
            except requests.RequestException as exc:
                raise SessionLostError(f"cannot reach the SAM-Med3D server at {self.url}: {exc}", 0,
                                       "unreachable") from exc
            if not (self._checked and _proxy_without_app(response)) or time.monotonic() > deadline:
                break
            time.sleep(RETRY_PAUSE)  # the request never reached the server: sending it again is safe
        if response.status_code >= 400:
            raise _error(response, self.url)
        return response


def _proxy_without_app(response: requests.Response) -> bool:
    """A 404 that is not the server's (whose 404s are JSON naming the session): Ray Serve's proxy answers so
    while the server restarts, before the API is back."""
    return response.status_code == 404 and _server_error(response) is None


def _server_error(response: requests.Response) -> Optional[Tuple[str, str]]:
    """(code, message) of a SAM-Med3D error answer; None for anything else (a proxy's page)."""
    try:
        body = response.json()
        return str(body["error"]), str(body["message"])
    except (ValueError, KeyError, TypeError):
        return None


def _error(response: requests.Response, url: str) -> SAMMed3DError:
    """The exception for an error answer; a non-JSON answer (a proxy's page) gets a message that says so."""
    found = _server_error(response)
    if found is None:
        return RemoteError(f"{url} answered HTTP {response.status_code} {response.reason} without a SAM-Med3D "
                           "message: is it a SAM-Med3D server (`python -m SAMMed3DLib serve`), and is it running?",
                           response.status_code, "not_sammed3d")
    code, message = found
    if code == "version_mismatch":
        return VersionMismatchError(message)
    if response.status_code == 400:
        return RemoteInputError(message)
    kind = SessionLostError if code in LOST else RemoteError
    return kind(f"the server refused the request (HTTP {response.status_code}): {message}", response.status_code, code)


class RemoteSession:
    """Interactive segmentation of ``image`` on a server; see the module docstring.

    ``server``: a :class:`ServerConnection` (where the local session takes the network). ``initial_mask``: a
    segmentation on the image's grid to refine (non-zero = inside). ``auto_extend`` may be changed between
    clicks, as on the local session.
    """

    def __init__(self, server: ServerConnection, image: sitk.Image, *, initial_mask: Optional[sitk.Image] = None,
                 auto_extend: bool = False, max_extend_steps: int = 6, history_limit: Optional[int] = None,
                 clicks: Sequence[Tuple[Sequence[float], bool]] = ()) -> None:
        self._server = server
        self.auto_extend = bool(auto_extend)
        options: Dict[str, Any] = {"max_extend_steps": int(max_extend_steps)}
        if history_limit is not None:
            options["history_limit"] = int(history_limit)
        if clicks:
            options["clicks"] = [[[float(v) for v in point], bool(positive)] for point, positive in clicks]
        self._upload = _upload(image, initial_mask, options)
        self._ids = itertools.count(1)
        self._payloads: Dict[int, Any] = {}
        self._ops: List[Tuple[str, Dict[str, Any]]] = []
        self._create()  # first: the server checks the initial mask's grid (as the local session does) and says why
        self._initial = _initial_mask(image, initial_mask)
        self._restart()

    # ------------------------------------------------------------------ state
    @property
    def mask(self) -> sitk.Image:
        """The current mask (uint8 0/1 on the image grid), a copy-on-write snapshot."""
        return sitk.Image(self._mask)

    @property
    def clicks(self) -> List[Tuple[Tuple[float, float, float], bool]]:
        return list(self._state["clicks"])

    @property
    def can_undo(self) -> bool:
        return bool(self._state["can_undo"])

    @property
    def can_redo(self) -> bool:
        return bool(self._state["can_redo"])

    @property
    def history_limit(self) -> int:
        """Undo steps the server keeps for this session."""
        return self._history_limit

    @property
    def session_id(self) -> str:
        return self._sid

    # ------------------------------------------------------------------ steps
    def add_click(self, point_ras: Sequence[float], positive: bool = True, *, payload: Any = None) -> RemoteStepResult:
        """A positive/negative click at ``point_ras`` (RAS mm); all or nothing, as locally."""
        try:
            point = [float(v) for v in point_ras]
        except (TypeError, ValueError) as exc:
            raise InputError(f"a click must be three coordinates in mm (R, A, S), got {point_ras!r}") from exc
        args = {"point": point, "positive": bool(positive), "auto_extend": self.auto_extend}
        return self._step("click", args, payload)

    def undo(self) -> RemoteStepResult:
        return self._step("undo", {})

    def redo(self) -> RemoteStepResult:
        return self._step("redo", {})

    def reset(self, *, payload: Any = None) -> RemoteStepResult:
        return self._step("reset", {}, payload)

    def discard_last_step(self) -> RemoteStepResult:
        return self._step("discard", {})

    def adopt(self, region: Any, painted: np.ndarray, erased: np.ndarray, *, payload: Any = None) -> RemoteStepResult:
        """Take a hand edit as the session's current state (see the local session's ``adopt``)."""
        return self._step("adopt", hand_edit_args(region, painted, erased), payload)

    def focus(self, points_ras: Sequence[Sequence[float]]) -> None:
        """Centre the next new ROI on these RAS points (see the local session's ``focus``)."""
        self._step("focus", {"points": [[float(v) for v in p] for p in points_ras]})

    def close(self) -> None:
        """Free the session on the server (a lost session is already freed)."""
        with contextlib.suppress(SessionLostError):
            self._server.request("DELETE", f"/sessions/{self._sid}")

    def __enter__(self) -> "RemoteSession":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ------------------------------------------------------------------ internals
    def _open(self) -> None:
        """A new session on the server, and this copy of the mask back at the initial mask."""
        self._create()
        self._restart()

    def _create(self) -> None:
        response = self._server.request("POST", "/sessions", data=self._upload,
                                        headers={"Content-Type": FRAME_TYPE})
        header, _ = unpack_frame(response.content)
        self._sid = str(header["session"])
        self._history_limit = int(header["history_limit"])
        self._state = _state_of(header)

    def _restart(self) -> None:
        self._mask = sitk.Image(self._initial)
        self._voxels = sitk.GetArrayFromImage(self._initial)  # z-y-x mirror, the base of the server's flips
        self._seq = 0

    def _step(self, op: str, args: Dict[str, Any], payload: Any = None) -> RemoteStepResult:
        start = time.perf_counter()
        if op in PAYLOAD_STEPS:
            args = {**args, "payload": next(self._ids)}
        message = ""
        try:
            header, bits = self._post(op, args)
        except SessionLostError as exc:
            message = self._recover(exc)
            header, bits = self._post(op, args)
        self._ops.append((op, args))
        if op in PAYLOAD_STEPS:
            self._payloads[args["payload"]] = payload
        result = self._apply(header, bits, start)
        return RemoteStepResult(**result, replayed=bool(message), message=message)

    def _post(self, op: str, args: Dict[str, Any]) -> Tuple[Dict[str, Any], bytes]:
        """The answer to ``op``; SessionLostError if an earlier answer never arrived (the flips would not apply)."""
        response = self._server.request("POST", f"/sessions/{self._sid}/{op}", **_step_request(args))
        header, bits = unpack_frame(response.content)
        if header.get("seq") != self._seq + 1:
            with contextlib.suppress(RemoteError):  # abandoned: the replay opens a new one
                self._server.request("DELETE", f"/sessions/{self._sid}")
            raise SessionLostError(f"missed an answer of session {self._sid} (answer {header.get('seq')} after "
                                   f"{self._seq}): this copy of the mask is stale", 0, "out_of_sync")
        self._seq += 1
        return header, bits

    def _apply(self, header: Dict[str, Any], bits: bytes, start: float) -> Dict[str, Any]:
        """Write the answer's region into the local mask and update the state; the result's fields."""
        applying = time.perf_counter()
        region, flipped = as_region(header["changed"]), as_region(header["flipped"])
        if flipped is not None:
            self._write(flipped, bits)
        self._state = _state_of(header)
        dropped = tuple(self._payloads.pop(i, None) for i in header["dropped"])
        timings = {k: float(v) for k, v in header["timings"].items()}
        timings["apply"] = time.perf_counter() - applying
        timings["engine"] = timings.get("total", 0.0)
        timings["total"] = time.perf_counter() - start
        timings["transfer"] = timings["total"] - timings["engine"]
        payload = self._payloads.get(header["payload"]) if header["payload"] is not None else None
        return {"mask": self.mask, "changed": region, "timings": timings, "encoded": bool(header["encoded"]),
                "clicks": self._state["clicks"], "payload": payload, "dropped": dropped, "flipped": flipped}

    def _write(self, flipped, bits: bytes) -> None:
        """XOR the answer's flips into the mirror, then paste the flipped box into the mask."""
        window = self._voxels[zyx_slices(flipped)]
        if window.shape != tuple(flipped[1][::-1]):
            raise ProtocolError(f"the server's flipped box {flipped} lies outside the image {self._mask.GetSize()}")
        apply_flips(window, bits)
        write_region(self._mask, flipped, window)

    def _recover(self, reason: SessionLostError) -> str:
        """Open a new session and replay every step so far (retrying while the server comes back)."""
        deadline = time.monotonic() + self._server.recovery_timeout
        while True:
            try:
                self._open()
                for op, args in self._ops:
                    header, bits = self._post(op, args)
                    self._apply(header, bits, time.perf_counter())
                return (f"the server lost the session ({reason}); a new session was opened and "
                        f"{count(len(self._ops), 'step')} replayed")
            except SessionLostError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)


def _step_request(args: Dict[str, Any]) -> Dict[str, Any]:
    """The keyword arguments of a step's request: its JSON in the step header (no body: behind Serve's proxy
    a body costs another round trip), or as the body when too long for a header."""
    text = json.dumps(args, separators=(",", ":"))  # ASCII (json's default), as a header must be
    if len(text) <= STEP_HEADER_MAX:
        return {"headers": {STEP_HEADER: text}}
    return {"data": text, "headers": {"Content-Type": "application/json"}}


def _state_of(header: Mapping[str, Any]) -> Dict[str, Any]:
    return {"clicks": as_clicks(header["clicks"]), "can_undo": header["can_undo"], "can_redo": header["can_redo"]}


def _initial_mask(image: sitk.Image, initial_mask: Optional[sitk.Image]) -> sitk.Image:
    """The client's starting mask: ``initial_mask != 0`` or empty, uint8 on the image's grid (the server has
    checked that the initial mask lies on that grid)."""
    if initial_mask is None:
        mask = sitk.Image(image.GetSize(), sitk.sitkUInt8)
    else:
        mask = sitk.GetImageFromArray((sitk.GetArrayViewFromImage(initial_mask) != 0).astype(np.uint8))
    mask.CopyInformation(image)
    return mask


def _upload(image: sitk.Image, initial_mask: Optional[sitk.Image], options: Dict[str, Any]) -> bytes:
    """The session upload frame: raw voxels (+ the bit-packed initial mask), compressed."""
    volume, data = raw_volume(image)
    if initial_mask is None:
        mask, bits = None, b""
    else:  # with its own geometry: the server checks it lies on the volume's grid, as a local session does
        mask = {"packed": True, **geometry_of(initial_mask)}
        bits = pack_bits(sitk.GetArrayViewFromImage(initial_mask) != 0)
    header = {"volume": {**volume, "length": len(data)}, "mask": mask, "options": options}
    return pack_frame(header, data + bits)

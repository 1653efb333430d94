"""The HTTP API (FastAPI on Ray Serve): checks version, token and limits, routes each session to its worker.

A session id names its worker (``w<index>-<random>``); new sessions go to the worker holding the fewest.
"""

import asyncio
import json
import re
from typing import Any, Dict, List, Optional

import ray
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from ray import serve

from .. import __version__
from ..protocol import (
    API_PREFIX,
    FRAME_TYPE,
    PROTOCOL,
    PROTOCOL_HEADER,
    STEP_HEADER,
    VERSION_HEADER,
    version_message,
)
from .config import NAMESPACE, NORMAL_PRIORITY, SERVE_LOGGING, ServerConfig, token_matches, worker_name
from .core import Failure
from .loopback import keep_replica_on_loopback

app = FastAPI(title="SAM-Med3D", version=__version__, docs_url=None, redoc_url=None, openapi_url=None)
"""No /docs, /redoc or /openapi.json: they would describe the API to anyone, token or not (README: the API)."""
STEPS = ("click", "undo", "redo", "reset", "discard", "focus", "adopt")
SESSION_ID = re.compile(r"w([0-9]{1,6})-[0-9a-f]{1,64}", re.ASCII)
"""A session id as workers make them: the worker's index, then random hex."""


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


@app.exception_handler(ApiError)
async def _api_error(_request: Request, exc: ApiError) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
    return JSONResponse({"error": exc.code, "message": exc.message}, status_code=exc.status, headers=headers)


def _respond(answer: Any) -> Response:
    if isinstance(answer, Failure):
        raise ApiError(answer.status, answer.code, answer.message)
    return Response(content=answer, media_type=FRAME_TYPE)


def _json_object(text: Any, where: str) -> Dict[str, Any]:
    """The JSON object in ``text`` (str or bytes); 400 naming ``where`` if it is not one."""
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise ApiError(400, "bad_input", f"{where} is not JSON: {exc}") from exc
    except RecursionError:  # thousands of nested brackets
        raise ApiError(400, "bad_input", f"{where} is nested too deeply") from None
    if not isinstance(value, dict):
        raise ApiError(400, "bad_input", f"{where} must be a JSON object")
    return value


def _too_large(limit: int) -> ApiError:
    return ApiError(413, "too_large", f"the upload is larger than the server's limit of {limit / 2**20:.0f} MiB "
                                      "(the server's --max-upload-mb sets it)")


@serve.deployment(num_replicas=1, ray_actor_options={"num_cpus": 0, "runtime_env": NORMAL_PRIORITY},
                  max_ongoing_requests=64,
                  logging_config=SERVE_LOGGING)
@serve.ingress(app)
class Gateway:
    """The ingress deployment: one replica, stateless apart from the worker handles."""

    def __init__(self, config: ServerConfig, workers: int) -> None:
        keep_replica_on_loopback()
        self._config = config
        self._count = workers
        self._handles: Dict[int, Any] = {}

    # ------------------------------------------------------------------ open endpoints
    @app.get(API_PREFIX + "/version")
    async def version(self) -> Dict[str, Any]:
        return {"version": __version__, "protocol": PROTOCOL}

    @app.get(API_PREFIX + "/health")
    async def health(self, request: Request) -> Dict[str, Any]:
        """Status and versions for anyone; the workers (weights, devices, process ids, sessions) with the token."""
        infos = await asyncio.gather(*(self._info(i) for i in range(self._count)))
        ok = all(info.get("alive") for info in infos)
        status = {"status": "ok" if ok else "degraded", "version": __version__, "protocol": PROTOCOL}
        if not token_matches(self._config.token, request.headers.get("authorization")):
            return status
        return {**status, "workers": infos}

    # ------------------------------------------------------------------ authorised endpoints
    @app.get(API_PREFIX + "/models")
    async def models(self, request: Request) -> Dict[str, Any]:
        self._check(request)
        infos = await asyncio.gather(*(self._info(i) for i in range(self._count)))
        return {"models": [{k: info.get(k) for k in ("index", "weights", "device", "alive")} for info in infos]}

    @app.post(API_PREFIX + "/sessions")
    async def create(self, request: Request) -> Response:
        self._check(request)
        upload = await self._read_body(request)
        order = await self._least_loaded()
        answer: Any = Failure(503, "full", "no worker is available")
        for index in order:  # a worker that filled up meanwhile answers "full": try the next one
            answer = await self._call(index, "create", upload)
            if not (isinstance(answer, Failure) and answer.code == "full"):
                break
        return _respond(answer)

    @app.post(API_PREFIX + "/sessions/{sid}/{op}")
    async def step(self, sid: str, op: str, request: Request) -> Response:
        self._check(request)
        if op not in STEPS:
            raise ApiError(404, "not_found", f"unknown step {op!r}; steps are {', '.join(STEPS)}")
        args = await self._step_args(request)
        return _respond(await self._call(self._worker_of(sid), "step", sid, op, args))

    @app.delete(API_PREFIX + "/sessions/{sid}")
    async def close(self, sid: str, request: Request) -> Response:
        self._check(request)
        return _respond(await self._call(self._worker_of(sid), "close", sid))

    # ------------------------------------------------------------------ helpers
    def _check(self, request: Request) -> None:
        """The version handshake, then the bearer token (401 without the right one)."""
        protocol = request.headers.get(PROTOCOL_HEADER)
        if protocol is not None and protocol != str(PROTOCOL):
            client = request.headers.get(VERSION_HEADER, "unknown")
            raise ApiError(409, "version_mismatch", version_message(client, protocol, __version__, PROTOCOL))
        if not token_matches(self._config.token, request.headers.get("authorization")):
            raise ApiError(401, "unauthorized", "a valid bearer token is required (Authorization: Bearer <token>)")

    async def _read_body(self, request: Request) -> bytes:
        """The request body, refused with 413 as soon as it exceeds the upload limit."""
        limit = self._config.limits.max_upload
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise _too_large(limit)
        chunks: List[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise _too_large(limit)
            chunks.append(chunk)
        return b"".join(chunks)

    async def _step_args(self, request: Request) -> Dict[str, Any]:
        """A step's arguments: the ``STEP_HEADER`` header's JSON, else the body's. The header is read first
        because behind Serve's proxy the body costs another round trip to the proxy (2-4 ms on 2 busy cores)."""
        text = request.headers.get(STEP_HEADER)
        if text is not None:
            return _json_object(text, f"the {STEP_HEADER} header")
        body = await self._read_body(request)
        return _json_object(body, "the request body") if body else {}

    def _worker_of(self, sid: str) -> int:
        """The worker index a session id names (``w<index>-...``, ASCII digits); 404 if none."""
        found = SESSION_ID.fullmatch(sid)
        if found and int(found.group(1)) < self._count:
            return int(found.group(1))
        raise ApiError(404, "session_lost", f"session {sid[:80]!r} does not exist on this server")

    def _handle(self, index: int) -> Any:
        if index not in self._handles:
            self._handles[index] = ray.get_actor(worker_name(index), namespace=NAMESPACE)
        return self._handles[index]

    async def _call(self, index: int, method: str, *args: Any) -> Any:
        """``method`` on worker ``index`` within the request time-out (504 after it, 503 if the worker died)."""
        timeout = self._config.limits.request_timeout
        try:
            ref = getattr(self._handle(index), method).remote(*args)
            return await asyncio.wait_for(ref, timeout)  # awaited on this loop: no thread-pool future hop
        except TimeoutError:  # asyncio.TimeoutError is this class since Python 3.11
            raise ApiError(504, "timeout", f"the worker did not answer within {timeout:g} s") from None
        except ray.exceptions.RayTaskError as exc:  # a failure that is not the client's: say what, not where
            lines = [line for line in str(exc).splitlines() if line.strip()]
            raise ApiError(500, "internal", f"the worker failed: {lines[-1] if lines else exc}") from None
        except (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError, ray.exceptions.TaskCancelledError,
                ValueError) as exc:  # cancelled: the worker died (or the server stops) before the call ran
            self._handles.pop(index, None)
            raise ApiError(503, "worker_lost", f"worker {index} is unavailable ({type(exc).__name__}: {exc}); "
                                               "its sessions are lost, open a new one") from None

    async def _info(self, index: int) -> Dict[str, Any]:
        try:
            info = await self._call(index, "info")
        except ApiError as exc:
            return {"index": index, "alive": False, "message": exc.message}
        return {**info, "alive": True}

    async def _least_loaded(self) -> List[int]:
        async def load(index: int) -> Optional[int]:
            try:
                return await self._call(index, "load")
            except ApiError:
                return None

        loads = await asyncio.gather(*(load(i) for i in range(self._count)))
        alive = [(n, i) for i, n in enumerate(loads) if n is not None]
        if not alive:
            raise ApiError(503, "worker_lost", "no worker is running; the server is starting or restarting a worker")
        return [i for _, i in sorted(alive)]

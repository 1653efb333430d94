"""One address for many people: each browser session gets its own station process behind a small proxy.

A trame server has one state for every page connected to it, so two annotators on one server would share a scene, a
selection and an undo history. The launcher listens on the public address, gives each browser a session cookie and
starts one station process per session (``command(port)``, on a free loopback port), then forwards that browser's
HTTP requests and websocket to it. Each session therefore has its own Slicer scene, controller, worker thread and
crash boundary; with ``--server`` their engines run on the team server's workers.

Off loopback a token is required (as ``serve`` requires one): the first visit carries it as ``?token=...``, the
launcher answers with an HttpOnly cookie. The page's websocket messages are limited to what the protocol sends in
one piece (wslink splits larger ones into 4 MiB chunks); the station checks an upload's total size.

The launcher owns the stations' lives: it keeps a spare station started, so that a new page does not wait for
Slicer to load, and ends a station whose page has been gone for :data:`IDLE_S` (the station gives its case back);
a browser that returns later gets a fresh station."""

import asyncio
import contextlib
import ctypes
import hmac
import secrets
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional

import aiohttp
from aiohttp import web

READY = "SAM-Med3D station ready on port"
SESSION_COOKIE = "sammed3d_session"
TOKEN_COOKIE = "sammed3d_token"
HOP_HEADERS = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
               "transfer-encoding", "upgrade", "host", "content-length", "content-encoding"}  # fmt: skip
STATION_START_S = 180.0  # a station's first start on a busy 2-core host loads Slicer's libraries (seconds)
IDLE_S = 60.0
"""A station whose page has been gone this long (seconds) ends, giving its case back; a reload within it finds
the session as it was."""
REAP_EVERY_S = 5.0
PR_SET_PDEATHSIG = 1  # prctl option (linux/prctl.h)


def free_port() -> int:
    """A loopback port nobody listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class Station:
    """A running station process and its port."""

    process: asyncio.subprocess.Process
    port: int
    log: List[str] = field(default_factory=list)
    pages: int = 0  # websockets connected now
    seen: float = field(default_factory=time.monotonic)  # when a page was last connected

    @property
    def alive(self) -> bool:
        return self.process.returncode is None


class Launcher:
    """See the module docstring. ``command(port)``: the argv of one station process listening on ``port``."""

    def __init__(self, command: Callable[[int], List[str]], *, token: Optional[str] = None, max_sessions: int = 8,
                 spares: int = 1, idle_s: float = IDLE_S, max_message_bytes: int = 8 * 2**20) -> None:  # fmt: skip
        self.command, self.token, self.max_sessions = command, token, max_sessions
        self.spares, self.idle_s, self.max_message_bytes = spares, idle_s, max_message_bytes
        self.stations: Dict[str, Station] = {}
        self._spare: List[asyncio.Task] = []  # stations starting or waiting for a session (a page opens at once)
        self._starting: Dict[str, asyncio.Lock] = {}
        self._client: Optional[aiohttp.ClientSession] = None
        self._reaper: Optional[asyncio.Task] = None

    def app(self) -> web.Application:
        app = web.Application(client_max_size=self.max_message_bytes)
        app.router.add_route("*", "/{tail:.*}", self.handle)
        app.on_startup.append(self._start_client)
        app.on_cleanup.append(self._stop)
        return app

    async def _start_client(self, app: web.Application) -> None:
        self._client = aiohttp.ClientSession(auto_decompress=False)
        self._reaper = asyncio.ensure_future(self._reap())
        self._keep_spares()

    async def _stop(self, app: web.Application) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
        for task in self._spare:
            task.cancel()  # a spare still starting is ended by _start_station
        spares = await asyncio.gather(*self._spare, return_exceptions=True)
        stations = [*self.stations.values(), *(s for s in spares if isinstance(s, Station))]
        for station in stations:
            if station.alive:
                station.process.terminate()
        for station in stations:
            try:
                await asyncio.wait_for(station.process.wait(), 10)
            except TimeoutError:
                station.process.kill()
        if self._client is not None:
            await self._client.close()

    def _keep_spares(self) -> None:
        """Start stations ahead of need, so that a new page does not wait for Slicer to load (within
        ``max_sessions``, spares included)."""
        busy = sum(s.alive for s in self.stations.values())
        while len(self._spare) < self.spares and busy + len(self._spare) < self.max_sessions:
            self._spare.append(asyncio.ensure_future(self._start_station()))

    async def _take_spare(self) -> Optional[Station]:
        """A started spare station (waiting for it if it is still starting), None when there is none."""
        while self._spare:
            task = self._spare.pop(0)
            try:
                station = await task
            except RuntimeError:
                continue
            if station.alive:
                return station
        return None

    async def _reap(self) -> None:
        """End the stations whose page has been gone for ``idle_s`` seconds; forget those that ended."""
        while True:
            await asyncio.sleep(REAP_EVERY_S)
            now = time.monotonic()
            for session, station in list(self.stations.items()):
                if station.alive and station.pages == 0 and now - station.seen > self.idle_s:
                    station.process.terminate()
                if not station.alive:
                    self.stations.pop(session, None)
                    self._starting.pop(session, None)
            self._spare = [task for task in self._spare if not (task.done() and (task.exception() is not None or
                                                                                 not task.result().alive))]
            self._keep_spares()

    # --- one request ----------------------------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if not self._allowed(request):
            return web.Response(status=401, text="SAM-Med3D: this station needs its access token (?token=...)\n")
        session = request.cookies.get(SESSION_COOKIE, "")
        new = session not in self.stations
        if new and request.path != "/":  # only a page load starts a station
            return web.Response(status=410, text="SAM-Med3D: this page's session has ended; reload the page\n")
        session = secrets.token_urlsafe(18) if new else session
        try:
            station = await self._station(session)
        except RuntimeError as exc:
            return web.Response(status=503, text=f"SAM-Med3D: {exc}\n")
        if request.headers.get("Upgrade", "").lower() == "websocket":
            response = await self._websocket(request, station)
        else:
            response = await self._http(request, station)
        if new or request.query.get("token"):
            response.set_cookie(SESSION_COOKIE, session, httponly=True, samesite="Strict")
            if self.token:
                response.set_cookie(TOKEN_COOKIE, self.token, httponly=True, samesite="Strict")
        return response

    def _allowed(self, request: web.Request) -> bool:
        if not self.token:
            return True
        given = request.query.get("token") or request.cookies.get(TOKEN_COOKIE) or ""
        return hmac.compare_digest(given.encode(), self.token.encode())

    async def _station(self, session: str) -> Station:
        """The session's running station, started (and waited for) when it has none."""
        lock = self._starting.setdefault(session, asyncio.Lock())
        async with lock:
            station = self.stations.get(session)
            if station is not None and station.alive:
                return station
            self.stations.pop(session, None)
            if sum(s.alive for s in self.stations.values()) >= self.max_sessions:
                raise RuntimeError(f"all {self.max_sessions} stations are in use; try again later")
            station = await self._take_spare() or await self._start_station()
            station.seen = time.monotonic()
            self.stations[session] = station
            self._keep_spares()
            return station

    async def _start_station(self) -> Station:
        port = free_port()
        process = await asyncio.create_subprocess_exec(*self.command(port), stdout=asyncio.subprocess.PIPE,
                                                       stderr=asyncio.subprocess.STDOUT,
                                                       preexec_fn=_end_with_parent)  # fmt: skip
        station = Station(process, port)
        try:
            await asyncio.wait_for(self._wait_ready(station), STATION_START_S)
        except (TimeoutError, RuntimeError) as exc:
            if station.alive:
                process.kill()
            tail = " | ".join(station.log[-3:])
            raise RuntimeError(f"a station did not start ({exc or 'timed out'}): {tail}") from exc
        except asyncio.CancelledError:  # the launcher stops while this station starts
            if station.alive:
                process.kill()
            raise
        asyncio.ensure_future(self._drain(station))
        return station

    async def _wait_ready(self, station: Station) -> None:
        while True:
            line = await station.process.stdout.readline()
            if not line:
                raise RuntimeError(f"it ended with status {await station.process.wait()}")
            text = line.decode(errors="replace").rstrip()
            station.log.append(text)
            del station.log[:-50]
            if text.startswith(READY):
                return

    async def _drain(self, station: Station) -> None:
        """Keep reading the station's output (a full pipe would stop it); the last lines stay for messages."""
        async for line in station.process.stdout:
            station.log.append(line.decode(errors="replace").rstrip())
            del station.log[:-50]
            if "Traceback" in station.log[-1]:
                print(f"station on port {station.port}: {station.log[-1]}", file=sys.stderr)

    async def _http(self, request: web.Request, station: Station) -> web.Response:
        url = f"http://127.0.0.1:{station.port}{request.rel_url.path_qs}"
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_HEADERS | {"cookie"}}
        body = await request.read()
        async with self._client.request(request.method, url, headers=headers, data=body or None) as answer:
            payload = await answer.read()
            kept = {k: v for k, v in answer.headers.items() if k.lower() not in HOP_HEADERS}
            if answer.headers.get("Content-Encoding"):
                kept["Content-Encoding"] = answer.headers["Content-Encoding"]
            return web.Response(status=answer.status, body=payload, headers=kept)

    async def _websocket(self, request: web.Request, station: Station) -> web.WebSocketResponse:
        page = web.WebSocketResponse(max_msg_size=self.max_message_bytes, compress=False)
        await page.prepare(request)
        url = f"ws://127.0.0.1:{station.port}{request.rel_url.path_qs}"
        station.pages += 1
        try:
            async with self._client.ws_connect(url, max_msg_size=0, compress=0) as inner:
                await _pump_both(page, inner)
        finally:
            station.pages -= 1
            station.seen = time.monotonic()
        return page


def _end_with_parent() -> None:
    """In a station process before it runs (Linux): the kernel terminates it if the launcher dies, so that no
    orphaned station keeps a case locked."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


async def _pump(source, sink) -> None:
    async for message in source:
        if message.type == aiohttp.WSMsgType.TEXT:
            await sink.send_str(message.data)
        elif message.type == aiohttp.WSMsgType.BINARY:
            await sink.send_bytes(message.data)
        else:
            break


async def _pump_both(page: web.WebSocketResponse, inner) -> None:
    """Forward messages both ways until either side closes (a refused oversized message closes the page's)."""
    tasks = [asyncio.ensure_future(_pump(page, inner)), asyncio.ensure_future(_pump(inner, page))]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await inner.close()
        await page.close()


def run(launcher: Launcher, host: str, port: int, on_ready: Callable[[str], None]) -> None:
    """Serve ``launcher`` on ``host:port`` until interrupted; ``on_ready(url)`` once it listens."""

    async def main() -> None:
        runner = web.AppRunner(launcher.app(), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound = runner.addresses[0][1] if runner.addresses else port
        shown = f"[{host}]" if ":" in host else host
        stop = asyncio.Event()
        with contextlib.suppress(NotImplementedError):  # platforms without loop signal handlers: Ctrl+C only
            asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        on_ready(f"http://{shown}:{bound}/")
        try:
            await stop.wait()
        finally:
            await runner.cleanup()  # the stations end and give their cases back

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())

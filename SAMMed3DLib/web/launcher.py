"""One address for many people: each browser session gets its own station process behind a small proxy.

A trame server has one state for every page connected to it, so two annotators on one server would share a scene, a
selection and an undo history. The launcher listens on the public address, gives each browser a session cookie and
starts one station process per session (``command(port)``, on a free loopback port), then forwards that browser's
HTTP requests and websocket to it. Each session therefore has its own Slicer scene, controller, worker thread and
crash boundary; with ``--server`` their engines run on the team server's workers.

Off loopback a token is required (as ``serve`` requires one): the first visit carries it as ``?token=...``, the
launcher answers with an HttpOnly cookie. The page's websocket messages are limited to what the protocol sends in
one piece (wslink splits larger ones into 4 MiB chunks); the station checks an upload's total size. A station ends
itself when its page has been gone for a while; the launcher then forgets the session (a returning browser gets a
fresh station)."""

import asyncio
import contextlib
import hmac
import secrets
import socket
import sys
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

    @property
    def alive(self) -> bool:
        return self.process.returncode is None


class Launcher:
    """See the module docstring. ``command(port)``: the argv of one station process listening on ``port``."""

    def __init__(self, command: Callable[[int], List[str]], *, token: Optional[str] = None, max_sessions: int = 8,
                 max_message_bytes: int = 8 * 2**20) -> None:  # fmt: skip
        self.command, self.token, self.max_sessions = command, token, max_sessions
        self.max_message_bytes = max_message_bytes
        self.stations: Dict[str, Station] = {}
        self._starting: Dict[str, asyncio.Lock] = {}
        self._client: Optional[aiohttp.ClientSession] = None

    def app(self) -> web.Application:
        app = web.Application(client_max_size=self.max_message_bytes)
        app.router.add_route("*", "/{tail:.*}", self.handle)
        app.on_startup.append(self._start_client)
        app.on_cleanup.append(self._stop)
        return app

    async def _start_client(self, app: web.Application) -> None:
        self._client = aiohttp.ClientSession(auto_decompress=False)

    async def _stop(self, app: web.Application) -> None:
        for station in self.stations.values():
            if station.alive:
                station.process.terminate()
        for station in self.stations.values():
            try:
                await asyncio.wait_for(station.process.wait(), 10)
            except asyncio.TimeoutError:
                station.process.kill()
        if self._client is not None:
            await self._client.close()

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
            station = await self._start_station()
            self.stations[session] = station
            return station

    async def _start_station(self) -> Station:
        port = free_port()
        process = await asyncio.create_subprocess_exec(*self.command(port), stdout=asyncio.subprocess.PIPE,
                                                       stderr=asyncio.subprocess.STDOUT)  # fmt: skip
        station = Station(process, port)
        try:
            await asyncio.wait_for(self._wait_ready(station), STATION_START_S)
        except (asyncio.TimeoutError, RuntimeError) as exc:
            if station.alive:
                process.kill()
            tail = " | ".join(station.log[-3:])
            raise RuntimeError(f"a station did not start ({exc or 'timed out'}): {tail}") from exc
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
        async with self._client.ws_connect(url, max_msg_size=0, compress=0) as inner:
            await _pump_both(page, inner)
        return page


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
        on_ready(f"http://{shown}:{bound}/")
        try:
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())

"""A real HTTP server on 127.0.0.1 for download tests, with switchable faults.

Each served path is a :class:`Route` holding the file's bytes and how to misbehave: fixed status codes,
failing the first N requests, dropping the connection mid-file, ignoring ``Range``, lying about the
length (shorter or longer than the body), an endless body without a length, a trickle of one byte at a
time, stalling, answering with a Google-Drive-style confirmation page, or redirecting. Every request
is logged (path, query, Range header, status, body bytes sent) so tests can assert what happened on
the wire.
"""

import contextlib
import functools
import io
import random
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Dict, List, Optional
from urllib.parse import parse_qs, urlsplit

CONFIRM_PAGE = """<!DOCTYPE html><html><head><title>Google Drive - Virus scan warning</title></head><body>
<p>Google Drive can't scan this file for viruses.</p>
<form id="download-form" action="{action}" method="get">
<input type="submit" id="uc-download-link" value="Download anyway">
<input type="hidden" name="id" value="{file_id}">
<input type="hidden" name="export" value="download">
<input type="hidden" name="confirm" value="t">
<input type="hidden" name="uuid" value="0f6c3a5e-1111-2222-3333-444455556666">
</form></body></html>"""


@dataclass
class Route:
    """What one path serves and how it misbehaves (all faults off by default)."""

    data: bytes = b""
    status: Optional[int] = None  # always answer this status (e.g. 404, 500) with a short body
    fail_first: int = 0  # answer 503 to this many requests, then behave
    drop_after: Optional[int] = None  # close the connection after this many body bytes ...
    drop_times: int = 1  # ... on this many requests (then send in full)
    ranges: bool = True  # honour Range with 206; False answers 200 with the whole file
    content_length: Optional[int] = None  # announce this length instead of the true one
    endless: bool = False  # no Content-Length; send bytes until the client hangs up
    trickle: Optional[float] = None  # send the body one byte at a time, this many seconds apart
    stall: float = 0.0  # seconds to wait after the headers before the body
    confirm_page: bool = False  # answer without ``confirm=`` by a Drive virus-scan page
    html: Optional[str] = None  # answer every request with this web page (a login page, say)
    redirect: Optional[str] = None  # answer 302 to this path
    requests: int = 0
    drops: int = 0


@dataclass
class Hit:
    """One request as the server saw it."""

    path: str
    query: Dict[str, List[str]]
    range: Optional[str]
    status: int = 0
    sent: int = 0


@dataclass
class FileServer:
    """``with FileServer() as srv: url = srv.add('/a.pth', data)``; ``srv.hits`` logs every request."""

    routes: Dict[str, Route] = field(default_factory=dict)
    hits: List[Hit] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    stop_event: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.httpd.daemon_threads = True
        self.httpd.block_on_close = False
        self.httpd.app = self  # type: ignore[attr-defined]
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def add(self, path: str, data: bytes = b"", **faults) -> str:
        """Serve ``data`` at ``path`` with the given :class:`Route` faults; return its URL."""
        self.routes[path] = Route(data=data, **faults)
        return self.base + path

    def body_bytes(self, path: str) -> int:
        """Body bytes sent for ``path`` over all requests."""
        return sum(h.sent for h in self.hits if h.path == path)

    def hits_for(self, path: str) -> List[Hit]:
        return [h for h in self.hits if h.path == path]

    def start(self) -> "FileServer":
        self.thread.start()
        return self

    def stop(self) -> None:
        """Stop answering; afterwards connections to the port are refused."""
        self.stop_event.set()
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self) -> "FileServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        if not self.stop_event.is_set():
            self.stop()


def closed_port_url(path: str = "/model.pth") -> str:
    """A URL on 127.0.0.1 where nothing listens (connection refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}{path}"


class _Handler(BaseHTTPRequestHandler):
    """Serves :class:`Route` objects; HTTP/1.0 so every response ends its connection."""

    def log_message(self, format, *args) -> None:  # noqa: A002 - silence the per-request stderr log
        pass

    @property
    def app(self) -> FileServer:
        return self.server.app  # type: ignore[attr-defined]

    def do_GET(self) -> None:  # noqa: N802 - the name http.server dispatches to
        parts = urlsplit(self.path)
        hit = Hit(parts.path, parse_qs(parts.query), self.headers.get("Range"))
        with self.app.lock:
            self.app.hits.append(hit)
            route = self.app.routes.get(parts.path)
            if route is not None:
                route.requests += 1
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the client hung up first
            self._answer(route, hit)

    def _answer(self, route: Optional[Route], hit: Hit) -> None:
        if route is None or route.status is not None:
            return self._short(hit, route.status if route else 404)
        if route.requests <= route.fail_first:
            return self._short(hit, 503)
        if route.redirect:
            return self._redirect(hit, route.redirect)
        if route.html is not None:
            return self._page(hit, route.html, endless=route.endless)
        if route.confirm_page and "confirm" not in hit.query:
            action = self.app.base + urlsplit(self.path).path
            file_id = hit.query.get("id", ["x"])[0]
            return self._page(hit, CONFIRM_PAGE.format(action=action, file_id=file_id))
        self._file(route, hit)

    def _short(self, hit: Hit, status: int) -> None:
        body = f"error {status}\n".encode()
        hit.status = status
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _redirect(self, hit: Hit, path: str) -> None:
        hit.status = 302
        self.send_response(302)
        self.send_header("Location", self.app.base + path)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _page(self, hit: Hit, page: str, endless: bool = False) -> None:
        body = page.encode()
        hit.status = 200
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        if not endless:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        if endless:
            self._send_forever(hit)

    def _file(self, route: Route, hit: Hit) -> None:
        data, start = route.data, _range_start(hit.range) if route.ranges else None
        if start is not None and start >= len(data):
            return self._short(hit, 416)
        body = data[start:] if start is not None else data
        hit.status = 206 if start is not None else 200
        self.send_response(hit.status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Accept-Ranges", "bytes" if route.ranges else "none")
        if not route.endless:
            self.send_header("Content-Length", str(route.content_length or len(body)))
        if start is not None:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.end_headers()
        if route.stall:
            self.app.stop_event.wait(route.stall)
        self._send_body(route, hit, body)

    def _send_body(self, route: Route, hit: Hit, body: bytes) -> None:
        if route.endless:
            return self._send_forever(hit)
        if route.trickle is not None:
            return self._send_slowly(hit, body, route.trickle)
        limit = len(body)
        if route.drop_after is not None and route.drops < route.drop_times:
            route.drops += 1
            limit = min(limit, route.drop_after)
        for i in range(0, limit, 64 << 10):
            piece = body[i : min(i + (64 << 10), limit)]
            self.wfile.write(piece)
            hit.sent += len(piece)
        self.wfile.flush()
        if limit < len(body):
            time.sleep(0.01)  # let the bytes leave before the abrupt close
            self.connection.shutdown(socket.SHUT_RDWR)


    def _send_forever(self, hit: Hit) -> None:
        """64 KiB blocks as fast as the client takes them, until it hangs up or the server stops."""
        block = bytes(64 << 10)
        while not self.app.stop_event.is_set():
            self.wfile.write(block)
            hit.sent += len(block)

    def _send_slowly(self, hit: Hit, body: bytes, interval: float) -> None:
        """One byte every ``interval`` seconds: keeps the connection alive without ever finishing."""
        for i in range(len(body)):
            self.wfile.write(body[i : i + 1])
            self.wfile.flush()
            hit.sent += 1
            if self.app.stop_event.wait(interval):
                return


def _range_start(header: Optional[str]) -> Optional[int]:
    """Start of ``Range: bytes=N-`` (the only form the downloader sends), else None."""
    if not header or not header.startswith("bytes=") or not header.endswith("-"):
        return None
    value = header[len("bytes=") : -1]
    return int(value) if value.isdigit() else None


def registry_entry(model_id: str, urls: List[str], **fields) -> dict:
    """A valid registry entry for tests; ``fields`` override the defaults (e.g. sha256, size)."""
    entry = {
        "id": model_id,
        "name": model_id,
        "description": "test checkpoint",
        "filename": f"{model_id}.pth",
        "urls": urls,
        "size": None,
        "sha256": None,
        "license": "Apache-2.0",
        "citation": "test",
    }
    entry.update(fields)
    return entry


def write_registry(path, *entries: dict) -> str:
    """Write a registry file holding ``entries``; return its path as a string."""
    import json

    with open(path, "w", encoding="utf-8") as fh:
        json.dump({"version": 1, "models": list(entries)}, fh, indent=1)
    return str(path)


def open_and_pinned_registry(srv, path, open_id: str, data: bytes) -> str:
    """A registry file served by ``srv``: ``open_id`` without hash or size (as every official entry today) and
    "pinned" with both recorded, the same ``data`` behind each; its path."""
    import hashlib

    return write_registry(
        path,
        registry_entry(open_id, [srv.add(f"/{open_id}.pth", data)]),
        registry_entry("pinned", [srv.add("/pinned.pth", data)], sha256=hashlib.sha256(data).hexdigest(),
                       size=len(data)),
    )  # fmt: skip


@functools.cache
def checkpoint_bytes(size: int, seed: int = 0) -> bytes:
    """About ``size`` bytes of a file that passes the cache's structural check: ``torch.save`` of a dict
    with ``model_state_dict`` naming all three SAM-Med3D parts, padded with a random uint8 tensor."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    state = {
        "image_encoder.patch_embed.proj.weight": torch.randn(4, 1, 2, 2, 2, generator=generator),
        "prompt_encoder.point_embeddings.0.weight": torch.randn(1, 4, generator=generator),
        "mask_decoder.iou_token.weight": torch.randn(1, 4, generator=generator),
    }
    pad = random.Random(seed).randbytes(max(size - 4096, 1))
    buffer = io.BytesIO()
    torch.save({"model_state_dict": state, "padding": torch.frombuffer(bytearray(pad), dtype=torch.uint8)}, buffer)
    return buffer.getvalue()

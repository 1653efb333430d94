"""A real HTTP server in front of another (as a reverse proxy is), which can answer as Ray Serve's proxy does
while a restarting server's API is not back yet: 404, plain text."""

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Optional

import requests

SERVE_404 = "Path '{path}' not found. Ping http://.../-/routes for available routes."
"""Ray Serve's proxy's answer to a path no application serves."""


class FrontServer:
    """Forwards every request to ``target`` except, while :meth:`answer_404` has some left, answering Serve's 404."""

    def __init__(self, target: str) -> None:
        self.target = target.rstrip("/")
        self._left = 0
        self.answered_404 = 0
        self._lock = threading.Lock()
        front = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                front._handle(self)

            def do_POST(self) -> None:
                front._handle(self)

            def do_DELETE(self) -> None:
                front._handle(self)

            def log_message(self, *_args) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread: Optional[threading.Thread] = None

    def answer_404(self, count: int) -> None:
        with self._lock:
            self._left = count

    def __enter__(self) -> "FrontServer":
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *_exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else b""
        with self._lock:
            missing = self._left > 0
            if missing:
                self._left -= 1
                self.answered_404 += 1
        if missing:
            status, headers, content = 404, {"Content-Type": "text/plain"}, SERVE_404.format(path=handler.path).encode()
        else:
            sent = {k: v for k, v in handler.headers.items() if k.lower() not in ("host", "content-length")}
            answer = requests.request(handler.command, self.target + handler.path, headers=sent, data=body, timeout=120)
            status, content = answer.status_code, answer.content
            headers = {"Content-Type": answer.headers.get("Content-Type", "application/octet-stream")}
        handler.send_response(status)
        for key, value in {**headers, "Content-Length": str(len(content))}.items():
            handler.send_header(key, value)
        handler.end_headers()
        handler.wfile.write(content)

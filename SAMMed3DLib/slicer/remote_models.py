"""The module's "Server" device: a SAM-Med3D server (``python -m SAMMed3DLib serve``) runs the network.

Nothing here imports torch: with Server chosen, the model store's loader returns a
:class:`~SAMMed3DLib.remote.ServerConnection` instead of a network, each target gets a
:class:`~SAMMed3DLib.remote.RemoteSession` instead of an ``InteractiveSession``, and the module works in a
Slicer without PyTorch. The URL and token come from :class:`~.models.ModuleOptions` (``server_url``,
``server_token``); the panel keeps them in Slicer's settings.
"""

import contextlib
import re
from typing import Any, Callable, Dict, Optional, Tuple

from ..errors import InputError
from ..remote import RemoteError, RemoteSession, ServerConnection
from ..wording import count

SERVER = "server"
"""The device value (parameter node, device menu) that sends clicks to a server."""
TEST_TIMEOUT_S = 15.0
"""Seconds Test connection waits for each answer (a click's requests wait longer: a first encode takes time)."""
NO_URL = "Enter the server's URL (e.g. http://gpu-host:8000) and token under Server first."


def is_server(options: Any) -> bool:
    """Whether ``options`` (ModuleOptions) send clicks to a server."""
    return options.device == SERVER


def _address(options: Any) -> Tuple[str, str]:
    """(URL, token) of the options; one ``InputError`` when there is no URL."""
    url = options.server_url.strip()
    if not url:
        raise InputError(NO_URL)
    return url, options.server_token.strip()


def error_line(error: BaseException, url: str = "") -> str:
    """The error as one short line; an unreachable server's long requests message becomes its OS reason."""
    text = " ".join(str(error).split()) or type(error).__name__
    if isinstance(error, RemoteError) and error.code == "unreachable":
        reason = re.search(r"\[Errno [^\]]*\][^'\")]*", text)
        text = f"cannot reach a SAM-Med3D server at {url}" + (f": {reason.group(0).strip()}" if reason else "")
    return text


class ServerStore:
    """Connections by (URL, token), opened and version-checked on the worker thread, and how many workers
    each server reported (for the device note, read on the main thread)."""

    def __init__(self) -> None:
        self._connections: Dict[Tuple[str, str], ServerConnection] = {}
        self._workers: Dict[str, int] = {}

    def job(self, options: Any) -> Callable[[], ServerConnection]:
        """Main thread: the loader of the options' connection (for the worker); ``InputError`` without a URL."""
        address = _address(options)
        return lambda: self._connect(address)

    def _connect(self, address: Tuple[str, str]) -> ServerConnection:
        connection = self._connections.get(address)
        if connection is None:
            connection = ServerConnection(*address)
            self._workers[address[0]] = len(connection.models())  # also checks the versions and the token
            self._connections[address] = connection
        return connection

    def test_job(self, options: Any) -> Callable[[], str]:
        """The Test connection job (for the worker thread): the server's version, then its workers, as one line;
        ``InputError`` (already one line) when it fails."""

        def run() -> str:
            url, token = _address(options)
            connection = ServerConnection(url, token, timeout=TEST_TIMEOUT_S)
            try:
                version = connection.version()["version"]
                workers = connection.models()
            except Exception as exc:  # noqa: BLE001 - whatever answered (or did not): one line for the panel
                raise InputError(f"Test connection failed: {error_line(exc, url)}") from exc
            finally:
                connection.close()
            alive = [w for w in workers if w.get("alive", True)]
            self._workers[url] = len(alive)
            devices = ", ".join(sorted({str(w.get("device")) for w in alive}))
            down = f"; {len(workers) - len(alive)} not answering (restarting?)" if len(alive) < len(workers) else ""
            return f"Connected to {url}: SAM-Med3D server {version}, {count(len(alive), 'worker')} ({devices}){down}."

        return run

    def note(self, options: Any) -> str:
        """What the panel shows about the Server device (no network call: it is read on every GUI update)."""
        url = options.server_url.strip()
        if not url:
            return NO_URL
        workers = self._workers.get(url)
        if workers is None:
            return f"running on the server {url} (press Test connection to check it)"
        return f"running on the server {url} ({count(workers, 'worker')})"

    def clear(self) -> None:
        for connection in self._connections.values():
            connection.close()
        self._connections.clear()


def open_session(model: Any, target: Any, auto_extend: bool, history_limit: Optional[int], clicks=()) -> Any:
    """Worker thread: the target's new session, on the server when ``model`` is a ServerConnection, else the
    local engine's (imported only then: it imports torch). ``clicks``: earlier clicks it continues."""
    options = {} if history_limit is None else {"history_limit": history_limit}
    options.update(initial_mask=target.initial_mask, auto_extend=auto_extend, clicks=clicks)
    if isinstance(model, ServerConnection):
        return RemoteSession(model, target.image, **options)
    from .. import InteractiveSession

    return InteractiveSession(model, target.image, embedding_cache=target.embeddings, **options)


def closer(session: Any) -> Optional[Callable[[], None]]:
    """A function freeing ``session`` on its server (a local session holds nothing to free: None). A failure
    is ignored: the server frees an idle session by itself."""
    if not isinstance(session, RemoteSession):
        return None

    def close() -> None:
        with contextlib.suppress(Exception):  # see the docstring
            session.close()

    return close

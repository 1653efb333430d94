"""URL forms the registry accepts, and their expansion into what is actually fetched.

Registry URLs are ``http(s)://…``, ``file://…`` or ``gdrive:<file id>``. Two environment variables
redirect them without editing the registry: ``HF_ENDPOINT`` (a Hugging Face mirror, as honoured by
``huggingface_hub``) and ``SAMMED3D_GDRIVE_URL`` (the Google Drive download endpoint; tests point it
at a local server).
"""

import os
import re
from pathlib import Path
from typing import Optional
from urllib.parse import unquote, urlencode, urlsplit
from urllib.request import url2pathname

HF_DEFAULT = "https://huggingface.co"
GDRIVE_DEFAULT = "https://drive.usercontent.google.com/download"
GDRIVE_PREFIX = "gdrive:"

_HTTP = re.compile(r"^https?://[A-Za-z0-9.\-_~%]+(:[0-9]{1,5})?(/[^\s]*)?$")
_FILE = re.compile(r"^file://[^\s]*/[^\s]*$")
_GDRIVE = re.compile(r"^gdrive:[A-Za-z0-9_-]{10,}$")


def is_valid_url(url: str) -> bool:
    """True for ``http(s)://host[/path]``, ``file:///path`` and ``gdrive:<id>`` (no spaces anywhere)."""
    return isinstance(url, str) and any(p.match(url) for p in (_HTTP, _FILE, _GDRIVE))


def is_remote(url: str) -> bool:
    """True when fetching ``url`` needs the network (http, https or Google Drive)."""
    return url.startswith(("http://", "https://", GDRIVE_PREFIX))


def file_url_path(url: str) -> Optional[Path]:
    """The local path of a ``file://`` URL, or None for anything else."""
    parts = urlsplit(url)
    if parts.scheme != "file":
        return None
    if parts.netloc not in ("", "localhost"):
        return Path(url2pathname(f"//{parts.netloc}{unquote(parts.path)}"))
    return Path(url2pathname(unquote(parts.path)))


def gdrive_url(file_id: str) -> str:
    """The direct-download URL of a Google Drive file id (base overridable by ``SAMMED3D_GDRIVE_URL``)."""
    base = os.environ.get("SAMMED3D_GDRIVE_URL") or GDRIVE_DEFAULT
    return f"{base}?{urlencode({'id': file_id, 'export': 'download'})}"


def expand_url(url: str) -> str:
    """What to request for a registry URL: ``gdrive:`` ids expanded, Hugging Face sent to ``HF_ENDPOINT``."""
    if url.startswith(GDRIVE_PREFIX):
        return gdrive_url(url[len(GDRIVE_PREFIX) :])
    endpoint = os.environ.get("HF_ENDPOINT", "").rstrip("/")
    if endpoint and (url == HF_DEFAULT or url.startswith(HF_DEFAULT + "/")):
        return endpoint + url[len(HF_DEFAULT) :]
    return url


def url_filename(url: str) -> str:
    """The last path segment of ``url`` (``gdrive:`` ids give ``<id>.pth``), for naming a download."""
    if url.startswith(GDRIVE_PREFIX):
        return url[len(GDRIVE_PREFIX) :] + ".pth"
    name = unquote(urlsplit(url).path).rstrip("/").rsplit("/", 1)[-1]
    return re.sub(r"[^A-Za-z0-9._-]", "_", name) or "download.pth"

"""The model registry (``model_weights.json``): which checkpoints exist and where to get them.

The file is validated here by hand, mirroring ``model_weights.schema.json``, so that the runtime
needs no ``jsonschema``; the test suite checks the file against the schema itself.
"""

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Tuple, Union

from ..errors import RegistryError
from .urls import is_valid_url

REGISTRY_NAME = "model_weights.json"
ID_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
FILENAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
SHA256_PATTERN = re.compile(r"^[0-9a-f]{64}$")
VERSION = 1
"""The registry format this code reads (the schema's ``version`` const)."""
TOP_LEVEL = ("$schema", "version", "models")
REQUIRED = ("id", "name", "description", "filename", "urls", "size", "sha256", "license", "citation")
OPTIONAL = ("recommended", "homepage", "max_size")


@dataclass(frozen=True)
class ModelEntry:
    """One checkpoint of the registry. ``size`` in bytes; ``size``/``sha256`` are None where unknown.
    ``max_size``: an upper bound of the file's size in bytes, applied to a download while ``size`` is unknown
    (None: only the download's own ``max_size`` applies)."""

    id: str
    name: str
    description: str
    filename: str
    urls: Tuple[str, ...]
    size: Optional[int]
    sha256: Optional[str]
    license: str
    citation: str
    recommended: bool = False
    homepage: Optional[str] = None
    max_size: Optional[int] = None


Registry = Dict[str, ModelEntry]
"""Entries by id, in file order."""


def default_registry_path() -> Path:
    """``$SAMMED3D_REGISTRY``, else the repository's ``model_weights.json``, else a copy in the package."""
    env = os.environ.get("SAMMED3D_REGISTRY")
    if env:
        return Path(env)
    package = Path(__file__).resolve().parents[1]
    repo_copy = package.parent / REGISTRY_NAME
    package_copy = package / REGISTRY_NAME
    if not repo_copy.is_file() and package_copy.is_file():
        return package_copy
    return repo_copy


def load_registry(path: Union["os.PathLike[str]", str, None] = None) -> Registry:
    """Read and validate a registry file (default: :func:`default_registry_path`); one RegistryError if bad."""
    path = Path(path) if path is not None else default_registry_path()
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RegistryError(f"cannot read model registry {path}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise RegistryError(f"model registry {path} is not a UTF-8 text (JSON) file: {exc.reason}") from exc
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise RegistryError(f"model registry {path} is not valid JSON: {exc}") from exc
    return parse_registry(data, source=str(path))


def parse_registry(data: Any, source: str = "model registry") -> Registry:
    """Entries of an already-decoded registry document, validated."""
    if not isinstance(data, Mapping) or not isinstance(data.get("models"), list) or not data["models"]:
        raise RegistryError(f"{source} must be an object with a non-empty list 'models'")
    unknown = [k for k in data if k not in TOP_LEVEL]
    if unknown:
        raise RegistryError(f"{source}: {_listed('unknown', unknown)} (expected {', '.join(TOP_LEVEL)})")
    if not isinstance(data.get("$schema", ""), str):
        raise RegistryError(f"{source}: '$schema' must be a string")
    version = data.get("version")
    if isinstance(version, bool) or version != VERSION:
        raise RegistryError(f"{source}: 'version' must be {VERSION}, got {version!r}")
    registry: Registry = {}
    for index, raw in enumerate(data["models"]):
        entry = parse_entry(raw, f"{source}: models[{index}]")
        if entry.id in registry:
            raise RegistryError(f"{source}: model id '{entry.id}' appears twice")
        registry[entry.id] = entry
    return registry


def parse_entry(raw: Any, where: str) -> ModelEntry:
    """One validated :class:`ModelEntry`; ``where`` names the entry in error messages."""
    if not isinstance(raw, Mapping):
        raise RegistryError(f"{where} must be an object")
    missing = [k for k in REQUIRED if k not in raw]
    unknown = [k for k in raw if k not in REQUIRED + OPTIONAL]
    if missing or unknown:
        what = "; ".join(p for p in (_listed("missing", missing), _listed("unknown", unknown)) if p)
        raise RegistryError(f"{where}: {what}")
    where = f"{where} ('{raw['id']}')" if isinstance(raw["id"], str) else where
    _check_fields(raw, where)
    return ModelEntry(
        id=raw["id"],
        name=raw["name"],
        description=raw["description"],
        filename=raw["filename"],
        urls=tuple(raw["urls"]),
        size=raw["size"],
        sha256=raw["sha256"],
        license=raw["license"],
        citation=raw["citation"],
        recommended=bool(raw.get("recommended", False)),
        homepage=raw.get("homepage"),
        max_size=raw.get("max_size"),
    )


def _listed(title: str, keys: list) -> str:
    return f"{title} field(s) {', '.join(map(repr, keys))}" if keys else ""


def _check_fields(raw: Mapping, where: str) -> None:
    """Raise RegistryError for the first field that breaks the schema's rules."""
    for key in ("id", "name", "description", "filename", "license", "citation"):
        if not isinstance(raw[key], str) or not raw[key].strip():
            raise RegistryError(f"{where}: '{key}' must be a non-empty string")
    if not ID_PATTERN.match(raw["id"]):
        raise RegistryError(f"{where}: id must be lower-case letters, digits, '.', '_' or '-'")
    if not FILENAME_PATTERN.match(raw["filename"]):
        raise RegistryError(f"{where}: filename {raw['filename']!r} must be a plain file name (no folders)")
    urls = raw["urls"]
    if not isinstance(urls, list) or not urls:
        raise RegistryError(f"{where}: 'urls' must be a non-empty list")
    for url in urls:
        if not is_valid_url(url):
            raise RegistryError(f"{where}: malformed URL {url!r} (expected http(s)://, file:// or gdrive:<id>)")
    repeated = sorted({url for url in urls if urls.count(url) > 1})
    if repeated:
        raise RegistryError(f"{where}: URL {repeated[0]!r} is listed twice in 'urls'")
    size = raw["size"]
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size <= 0):
        raise RegistryError(f"{where}: 'size' must be a positive number of bytes or null")
    bound = raw.get("max_size")
    if bound is not None and (isinstance(bound, bool) or not isinstance(bound, int) or bound <= 0):
        raise RegistryError(f"{where}: 'max_size' must be a positive number of bytes")
    if bound is not None and size is not None and size > bound:
        raise RegistryError(f"{where}: 'size' ({size} bytes) is larger than 'max_size' ({bound} bytes)")
    sha = raw["sha256"]
    if sha is not None and (not isinstance(sha, str) or not SHA256_PATTERN.match(sha)):
        raise RegistryError(f"{where}: 'sha256' must be 64 lower-case hex digits or null")
    if "recommended" in raw and not isinstance(raw["recommended"], bool):
        raise RegistryError(f"{where}: 'recommended' must be true or false")
    if raw.get("homepage") is not None and not is_valid_url(raw["homepage"]):
        raise RegistryError(f"{where}: malformed homepage URL {raw['homepage']!r}")


def as_registry(registry: Union[Registry, "os.PathLike[str]", str, None]) -> Registry:
    """A loaded registry from a path, None (the default file) or an already loaded mapping."""
    if isinstance(registry, Mapping):
        return dict(registry)
    return load_registry(registry)

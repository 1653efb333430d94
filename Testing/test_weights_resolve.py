"""``resolve_checkpoint`` and ``load_model`` through the registry, the cache and a real 127.0.0.1 server."""

import hashlib
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest
from support.http_fixtures import checkpoint_bytes, open_and_pinned_registry, registry_entry, write_registry

from SAMMed3DLib.errors import CheckpointError, DownloadError, RegistryError
from SAMMed3DLib.weights import cached_path, default_cache_dir, load_registry, resolve_checkpoint, url_cached_path

DATA = checkpoint_bytes(300_000, seed=1)
SHA = hashlib.sha256(DATA).hexdigest()
FAST = dict(retries=1, backoff=0.01, timeout=(2.0, 2.0))  # seconds
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def reg(srv, tmp_path) -> str:
    """A registry with 'tiny' (no known hash) and 'pinned' (known hash and size) on the local server."""
    return open_and_pinned_registry(srv, tmp_path / "registry.json", "tiny", DATA)


def test_registry_id_downloads_into_cache(reg, tmp_path):
    cache = tmp_path / "cache"
    path = resolve_checkpoint("tiny", registry=reg, cache_dir=cache, **FAST)
    assert path == cached_path(load_registry(reg)["tiny"], cache) and path.read_bytes() == DATA
    assert (path.parent / "tiny.pth.sha256").read_text().split()[0] == SHA


def test_cached_id_resolves_with_server_stopped(srv, reg, tmp_path):
    cache = tmp_path / "cache"
    first = resolve_checkpoint("pinned", registry=reg, cache_dir=cache, **FAST)
    srv.stop()
    assert resolve_checkpoint("pinned", registry=reg, cache_dir=cache, **FAST) == first
    assert len(srv.hits) == 1


def test_corrupted_cache_is_detected_and_deleted_when_offline(srv, reg, tmp_path):
    cache = tmp_path / "cache"
    path = resolve_checkpoint("tiny", registry=reg, cache_dir=cache, **FAST)
    path.write_bytes(b"\0" + DATA[1:])  # same size, one byte changed: only the recorded hash can tell
    srv.stop()
    with pytest.raises(DownloadError, match=r"corrupted \(checksum mismatch: expected SHA-256 " + SHA):
        resolve_checkpoint("tiny", registry=reg, cache_dir=cache, **FAST)
    assert not path.exists()


def test_corrupted_cache_is_fetched_again_when_online(srv, reg, tmp_path):
    cache = tmp_path / "cache"
    path = resolve_checkpoint("pinned", registry=reg, cache_dir=cache, **FAST)
    path.write_bytes(DATA[:1000])
    assert resolve_checkpoint("pinned", registry=reg, cache_dir=cache, **FAST).read_bytes() == DATA
    assert len(srv.hits) == 2


def test_explicit_sha256_overrides_registry(reg, tmp_path):
    with pytest.raises(DownloadError, match="checksum mismatch: expected SHA-256 " + "a" * 64):
        resolve_checkpoint("tiny", registry=reg, cache_dir=tmp_path / "c", sha256="a" * 64, **FAST)
    assert sorted(p.name for p in (tmp_path / "c" / "checkpoints").iterdir()) == [".locks"]


def test_local_path_and_file_url_are_used_in_place(tmp_path):
    local = tmp_path / "my weights.pth"
    local.write_bytes(DATA)
    assert resolve_checkpoint(local, registry={}) == local
    assert resolve_checkpoint(local.as_uri(), registry={}, sha256=SHA) == local


def test_local_file_with_wrong_sha256_is_refused(tmp_path):
    local = tmp_path / "w.pth"
    local.write_bytes(DATA)
    with pytest.raises(CheckpointError, match=f"expected SHA-256 {'b' * 64}, got {SHA}"):
        resolve_checkpoint(local, registry={}, sha256="b" * 64)


def test_missing_local_file_and_unknown_id(reg, tmp_path):
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        resolve_checkpoint(tmp_path / "nope.pth", registry=reg)
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        resolve_checkpoint((tmp_path / "nope.pth").as_uri(), registry=reg)
    with pytest.raises(RegistryError, match=r"unknown model id 'nope' \(known: tiny, pinned\)"):
        resolve_checkpoint("nope", registry=reg)


def test_http_url_spec_is_cached_per_url(srv, tmp_path):
    url = srv.add("/x/model.pth", DATA)
    other_data = checkpoint_bytes(300_000, seed=7)
    other = srv.add("/y/model.pth", other_data)
    cache = tmp_path / "cache"
    a = resolve_checkpoint(url, cache_dir=cache, sha256=SHA, **FAST)
    b = resolve_checkpoint(other, cache_dir=cache, **FAST)
    assert a != b and a.read_bytes() == DATA and b.read_bytes() == other_data
    assert (a, b) == (url_cached_path(url, cache), url_cached_path(other, cache))  # the public lookup agrees
    srv.stop()
    assert resolve_checkpoint(url, cache_dir=cache, **FAST) == a


def test_cache_dir_from_environment(reg, tmp_path, monkeypatch):
    monkeypatch.setenv("SAMMED3D_CACHE_DIR", str(tmp_path / "envcache"))
    assert default_cache_dir() == tmp_path / "envcache"
    assert resolve_checkpoint("tiny", registry=reg, **FAST).is_relative_to(tmp_path / "envcache")
    monkeypatch.delenv("SAMMED3D_CACHE_DIR")
    assert default_cache_dir().name == "SAMMed3D"


def test_concurrent_threads_download_once(srv, reg, tmp_path):
    srv.routes["/tiny.pth"].stall = 0.3  # keep the first download in flight while the others start
    cache, results, errors = tmp_path / "cache", [], []

    def worker() -> None:
        try:
            results.append(resolve_checkpoint("tiny", registry=reg, cache_dir=cache, **FAST))
        except Exception as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == [] and len(set(results)) == 1 and results[0].read_bytes() == DATA
    assert len(srv.hits) == 1
    assert not list(cache.rglob("*.part"))


def test_concurrent_processes_produce_one_good_file(srv, reg, tmp_path):
    srv.routes["/pinned.pth"].stall = 0.5
    cache = tmp_path / "cache"
    script = textwrap.dedent(
        f"""
        from SAMMed3DLib.weights import resolve_checkpoint
        print(resolve_checkpoint("pinned", registry={reg!r}, cache_dir={str(cache)!r}, retries=1, backoff=0.01))
        """
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=60) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    paths = {o[0].decode().strip() for o in outs}
    assert len(paths) == 1 and Path(paths.pop()).read_bytes() == DATA
    assert len(srv.hits) == 1


# --- load_model through the registry ---------------------------------------------------------------


def test_load_model_resolves_registry_id(srv, tiny_checkpoint, tmp_path):
    data = tiny_checkpoint.read_bytes()
    reg = write_registry(
        tmp_path / "r.json",
        registry_entry("tiny-net", [srv.add("/tiny-net.pth", data)], sha256=hashlib.sha256(data).hexdigest()),
    )
    from SAMMed3DLib import load_model

    model = load_model("tiny-net", registry=reg, cache_dir=tmp_path / "cache", retries=0)
    assert model.image_encoder.patch_embed.proj.weight.shape[0] == 48
    assert len(srv.hits) == 1


class _Evil:
    """A pickle payload: unpickling it would create the folder named by ``marker``."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def test_malicious_pickle_is_refused_and_never_runs(srv, tmp_path):
    import torch

    from SAMMed3DLib import load_model

    marker = tmp_path / "payload-ran"
    evil = tmp_path / "evil.pth"
    weights = {f"{part}.w": torch.zeros(1) for part in ("image_encoder", "prompt_encoder", "mask_decoder")}
    torch.save({"model_state_dict": weights, "extra": _Evil(str(marker))}, evil)  # passes the structural check
    reg = write_registry(tmp_path / "r.json", registry_entry("evil", [srv.add("/evil.pth", evil.read_bytes())]))
    with pytest.raises(CheckpointError, match="refusing to load"):
        load_model("evil", registry=reg, cache_dir=tmp_path / "cache", retries=0)
    assert not marker.exists()

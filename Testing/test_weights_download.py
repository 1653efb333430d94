"""``SAMMed3DLib.weights.download`` against a real HTTP server on 127.0.0.1: success paths and every fault."""

import hashlib
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from support.http_fixtures import checkpoint_bytes, closed_port_url

from SAMMed3DLib.errors import DownloadError
from SAMMed3DLib.weights import DownloadCancelledError, download

DATA = checkpoint_bytes(700_000, seed=0)  # a structurally valid checkpoint of ~11 reads of 64 KiB
SHA = hashlib.sha256(DATA).hexdigest()
FAST = dict(retries=2, backoff=0.01, timeout=(2.0, 2.0))  # seconds; keeps fault tests fast


@pytest.fixture
def cache(tmp_path) -> Path:
    return tmp_path / "cache"


def leftovers(folder: Path) -> list:
    """Partial or temporary files in ``folder`` (lock files are not partial downloads)."""
    return [p.name for p in folder.rglob("*") if p.suffix in (".part", ".tmp") or p.name.endswith(".sha256.tmp")]


def assert_nothing_cached(folder: Path, name: str = "m.pth") -> None:
    """Neither the file nor any partial or temporary file is in ``folder``."""
    assert not (folder / name).exists()
    if folder.exists():
        assert leftovers(folder) == []


# --- success paths -------------------------------------------------------------------------------


def test_downloads_verifies_and_records_hash(srv, cache):
    url = srv.add("/m.pth", DATA)
    path = download(url, cache, sha256=SHA, size=len(DATA), **FAST)
    assert path == cache / "m.pth" and path.read_bytes() == DATA
    assert (cache / "m.pth.sha256").read_text().split()[0] == SHA
    assert leftovers(cache) == []


def test_progress_reports_bytes_total_and_rate(srv, cache):
    calls = []
    download(srv.add("/m.pth", DATA), cache, progress=lambda d, t, r: calls.append((d, t, r)), **FAST)
    assert calls[-1][:2] == (len(DATA), len(DATA))
    assert all(b[0] >= a[0] for a, b in zip(calls, calls[1:]))
    assert all(rate > 0 for _, _, rate in calls)


def test_cached_file_is_returned_without_network(srv, cache):
    url = srv.add("/m.pth", DATA)
    download(url, cache, **FAST)
    srv.stop()
    assert download(url, cache, **FAST).read_bytes() == DATA
    assert len(srv.hits) == 1


def test_mirrors_are_tried_in_order(srv, cache):
    dead = srv.add("/dead/m.pth", status=404)
    good = srv.add("/m.pth", DATA)
    path = download([dead, good], cache, sha256=SHA, **FAST)
    assert path.read_bytes() == DATA
    assert [h.path for h in srv.hits] == ["/dead/m.pth", "/m.pth"]


def test_transient_5xx_is_retried_then_succeeds(srv, cache):
    url = srv.add("/m.pth", DATA, fail_first=2)
    assert download(url, cache, sha256=SHA, **FAST).read_bytes() == DATA
    assert [h.status for h in srv.hits] == [503, 503, 200]


def test_dropped_connection_resumes_with_range(srv, cache):
    url = srv.add("/m.pth", DATA, drop_after=400_000)
    assert download(url, cache, sha256=SHA, **FAST).read_bytes() == DATA
    hits = srv.hits_for("/m.pth")
    assert len(hits) == 2 and hits[1].range is not None and hits[1].status == 206
    assert srv.body_bytes("/m.pth") < 2 * len(DATA)


def test_server_ignoring_range_restarts_cleanly(srv, cache):
    url = srv.add("/m.pth", DATA, drop_after=400_000, ranges=False)
    assert download(url, cache, sha256=SHA, **FAST).read_bytes() == DATA
    hits = srv.hits_for("/m.pth")
    assert hits[1].range is not None and hits[1].status == 200  # asked to resume, got the whole file


def test_partial_left_by_killed_process_is_resumed(srv, cache):
    cache.mkdir()
    (cache / "m.pth.part").write_bytes(DATA[:300_000])
    url = srv.add("/m.pth", DATA)
    assert download(url, cache, sha256=SHA, **FAST).read_bytes() == DATA
    assert srv.hits[0].range == "bytes=300000-" and srv.body_bytes("/m.pth") == len(DATA) - 300_000


def test_redirects_are_followed(srv, cache):
    srv.add("/cdn/blob", DATA)
    url = srv.add("/m.pth", redirect="/cdn/blob")
    assert download(url, cache, sha256=SHA, **FAST).read_bytes() == DATA


def test_file_url_mirror_is_copied_into_cache(tmp_path, cache):
    source = tmp_path / "share" / "m.pth"
    source.parent.mkdir()
    source.write_bytes(DATA)
    path = download([closed_port_url(), source.as_uri()], cache, sha256=SHA, **FAST)
    assert path.read_bytes() == DATA and path != source


def test_google_drive_confirmation_page_is_followed(srv, cache, monkeypatch):
    srv.add("/download", DATA, confirm_page=True)
    monkeypatch.setenv("SAMMED3D_GDRIVE_URL", srv.base + "/download")
    path = download("gdrive:1AbCdEfGhIjKlMnOp", cache, filename="m.pth", sha256=SHA, **FAST)
    assert path.read_bytes() == DATA
    first, second = srv.hits
    assert first.query["id"] == ["1AbCdEfGhIjKlMnOp"] and "confirm" not in first.query
    assert second.query["confirm"] == ["t"] and second.query["id"] == ["1AbCdEfGhIjKlMnOp"]


def test_google_drive_resume_uses_confirmed_url(srv, cache, monkeypatch):
    srv.add("/download", DATA, confirm_page=True, drop_after=300_000)
    monkeypatch.setenv("SAMMED3D_GDRIVE_URL", srv.base + "/download")
    download("gdrive:1AbCdEfGhIjKlMnOp", cache, filename="m.pth", sha256=SHA, **FAST)
    resumed = srv.hits[-1]
    assert resumed.range is not None and resumed.query.get("confirm") == ["t"] and len(srv.hits) == 3


def test_hf_endpoint_is_honoured(srv, cache, monkeypatch):
    srv.add("/blueyo0/SAM-Med3D/resolve/main/m.pth", DATA)
    monkeypatch.setenv("HF_ENDPOINT", srv.base + "/")
    url = "https://huggingface.co/blueyo0/SAM-Med3D/resolve/main/m.pth"
    assert download(url, cache, sha256=SHA, **FAST).read_bytes() == DATA


# --- faults: one clear DownloadError, nothing partial left ------------------------------------------


def test_404_fails_once_with_status(srv, cache):
    url = srv.add("/m.pth", status=404)
    with pytest.raises(DownloadError, match=r"HTTP 404"):
        download(url, cache, **FAST)
    assert len(srv.hits) == 1  # a 404 is not retried
    assert_nothing_cached(cache)


def test_5xx_is_retried_then_fails(srv, cache):
    url = srv.add("/m.pth", status=500)
    with pytest.raises(DownloadError, match=r"HTTP 500.*3 attempts"):
        download(url, cache, **FAST)
    assert len(srv.hits) == 3
    assert_nothing_cached(cache)


def test_all_mirrors_failing_lists_each(srv, cache):
    urls = [srv.add("/a/m.pth", status=404), srv.add("/b/m.pth", status=500)]
    with pytest.raises(DownloadError, match=r"all 2 sources.*/a/m.pth: HTTP 404.*/b/m.pth: HTTP 500"):
        download(urls, cache, **FAST)
    assert_nothing_cached(cache)


def test_server_without_range_that_always_drops_fails(srv, cache):
    url = srv.add("/m.pth", DATA, drop_after=400_000, drop_times=99, ranges=False)
    with pytest.raises(DownloadError, match=r"connection"):
        download(url, cache, **FAST)
    assert len(srv.hits) <= 4
    assert_nothing_cached(cache)


def test_wrong_size_is_rejected(srv, cache):
    url = srv.add("/m.pth", DATA)
    with pytest.raises(DownloadError, match=rf"wrong size.*{len(DATA)} bytes, expected {len(DATA) + 1}"):
        download(url, cache, size=len(DATA) + 1, **FAST)
    assert_nothing_cached(cache)


def test_length_announced_but_never_sent_fails(srv, cache):
    """The server claims 800 000 bytes but has 700 000: every resume comes up short, then one error."""
    url = srv.add("/m.pth", DATA, content_length=800_000)
    with pytest.raises(DownloadError, match=r"m.pth failed"):
        download(url, cache, **FAST)
    assert_nothing_cached(cache)


def test_checksum_mismatch_names_both_hashes(srv, cache):
    url = srv.add("/m.pth", DATA)
    wrong = "0" * 64
    with pytest.raises(DownloadError, match=rf"checksum mismatch: expected SHA-256 {wrong}, got {SHA}"):
        download(url, cache, sha256=wrong, **FAST)
    assert_nothing_cached(cache)
    assert not (cache / "m.pth.sha256").exists()


def test_stalled_server_times_out(srv, cache):
    url = srv.add("/m.pth", DATA, stall=5.0)
    with pytest.raises(DownloadError, match=r"timed out"):
        download(url, cache, retries=1, backoff=0.01, timeout=(1.0, 0.3))
    assert len(srv.hits) == 2
    assert_nothing_cached(cache)


def test_connection_refused(cache):
    with pytest.raises(DownloadError, match=r"cannot connect \(connection refused\)"):
        download(closed_port_url("/m.pth"), cache, **FAST)
    assert_nothing_cached(cache)


def test_web_page_instead_of_file_is_rejected(srv, cache):
    url = srv.add("/m.pth", html="<html><body>Please sign in</body></html>")
    with pytest.raises(DownloadError, match=r"web page instead of the file"):
        download(url, cache, **FAST)
    assert_nothing_cached(cache)


def test_malformed_url_is_rejected(cache):
    with pytest.raises(DownloadError, match=r"malformed URL 'htp:/x y'"):
        download("htp:/x y", cache, **FAST)


def test_cache_path_under_a_regular_file_is_refused(srv, tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    with pytest.raises(DownloadError, match=r"cannot create cache directory"):
        download(srv.add("/m.pth", DATA), blocker / "cache", **FAST)
    assert srv.hits == []


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root ignores directory permissions")
def test_read_only_cache_is_refused(srv, cache):
    cache.mkdir()
    cache.chmod(0o555)
    try:
        with pytest.raises(DownloadError, match=r"not writable"):
            download(srv.add("/m.pth", DATA), cache, **FAST)
    finally:
        cache.chmod(0o755)


def test_cancel_by_returning_false_leaves_nothing(srv, cache):
    url = srv.add("/m.pth", DATA)
    with pytest.raises(DownloadCancelledError, match="cancelled"):
        download(url, cache, progress=lambda done, total, rate: done < 300_000, **FAST)
    assert_nothing_cached(cache)


def test_cancel_by_raising_leaves_nothing(srv, cache):
    def stop(done, total, rate):
        raise DownloadCancelledError("download cancelled by the user")

    with pytest.raises(DownloadCancelledError, match="by the user"):
        download(srv.add("/m.pth", DATA), cache, progress=stop, **FAST)
    assert_nothing_cached(cache)


@pytest.mark.skipif(sys.platform == "win32", reason="RLIMIT_FSIZE (the simulated full disk) is POSIX only")
def test_disk_full_stops_with_one_error(srv, cache):
    """A write error (file-size limit, as on a full disk) stops at once and leaves no partial file."""
    url = srv.add("/m.pth", DATA)
    script = textwrap.dedent(
        f"""
        import resource, signal, sys
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # get EFBIG from write() instead of being killed
        resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, resource.RLIM_INFINITY))
        from SAMMed3DLib.weights import download
        from SAMMed3DLib.errors import DownloadError
        try:
            download({url!r}, {str(cache)!r}, retries=2, backoff=0.01)
        except DownloadError as exc:
            print("ERROR", exc)
        """
    )
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", script], cwd=root, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("ERROR cannot write") and "too large" in out.stdout.lower(), out.stdout
    assert len(srv.hits) == 1  # a write error is not retried
    assert_nothing_cached(cache)

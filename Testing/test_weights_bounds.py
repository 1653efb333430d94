"""Downloads end: an endless body hits the size cap, a trickle the minimum pace, everything the overall deadline.

Each case runs against the real 127.0.0.1 server (Testing/support/http_fixtures.py) and must stop with one
clear message, leave no partial file, and do so in seconds.
"""

import math
import time

import pytest
from support.http_fixtures import checkpoint_bytes

from SAMMed3DLib.cli import main
from SAMMed3DLib.errors import DownloadError
from SAMMed3DLib.weights import download

DATA = checkpoint_bytes(200_000, seed=3)
FAST = dict(retries=0, backoff=0.01, timeout=(2.0, 2.0))  # seconds


def assert_clean(folder) -> None:
    """No file, no partial file, no recorded hash."""
    if folder.exists():
        assert [p.name for p in folder.rglob("*") if p.is_file() and ".locks" not in p.parts] == []


def test_endless_body_stops_at_the_size_cap(srv, tmp_path):
    url = srv.add("/m.pth", endless=True)
    start = time.monotonic()
    with pytest.raises(DownloadError, match=r"more than 1000000 bytes.*max_size"):
        download(url, tmp_path, max_size=1_000_000, **FAST)
    assert time.monotonic() - start < 5
    assert len(srv.hits) == 1  # too big is not retried
    assert_clean(tmp_path)


def test_endless_body_stops_at_the_registry_size(srv, tmp_path):
    url = srv.add("/m.pth", endless=True)
    with pytest.raises(DownloadError, match=r"sent more than the expected 300000 bytes"):
        download(url, tmp_path, size=300_000, **FAST)
    assert_clean(tmp_path)


def test_endless_web_page_is_cut_off(srv, tmp_path):
    url = srv.add("/m.pth", html="<html><body>", endless=True)
    with pytest.raises(DownloadError, match=r"web page of more than 1048576 bytes"):
        download(url, tmp_path, **FAST)
    assert_clean(tmp_path)


def test_announced_size_over_the_cap_is_refused_before_reading(srv, tmp_path):
    url = srv.add("/m.pth", DATA)
    with pytest.raises(DownloadError, match=rf"offers {len(DATA)} bytes, more than the 100000 bytes allowed"):
        download(url, tmp_path, max_size=100_000, **FAST)
    assert_clean(tmp_path)


def test_trickle_is_stopped_by_the_minimum_pace(srv, tmp_path):
    url = srv.add("/m.pth", DATA, trickle=0.2)
    start = time.monotonic()
    with pytest.raises(DownloadError, match=r"too slow: \d+ bytes in [\d.]+ s"):
        download(url, tmp_path, retries=0, timeout=(1.0, 1.0))
    assert time.monotonic() - start < 4
    assert_clean(tmp_path)


def test_trickle_is_stopped_by_the_deadline(srv, tmp_path):
    """A trickle the pace check lets pass (its window is the 30 s read time-out) still ends at ``max_time``."""
    srv.add("/m.pth", DATA, trickle=0.2)
    url = srv.base + "/m.pth"
    start = time.monotonic()
    with pytest.raises(DownloadError, match=r"took longer than the 1 s allowed"):
        download(url, tmp_path, retries=5, backoff=0.01, timeout=(1.0, 30.0), max_time=1.0)
    assert time.monotonic() - start < 3
    assert_clean(tmp_path)


def test_deadline_bounds_retries_and_back_off(srv, tmp_path):
    url = srv.add("/m.pth", status=503)
    start = time.monotonic()
    with pytest.raises(DownloadError, match=r"took longer than the 1 s allowed"):
        download(url, tmp_path, retries=50, backoff=0.2, timeout=(1.0, 1.0), max_time=1.0)
    assert time.monotonic() - start < 3
    assert_clean(tmp_path)


@pytest.mark.parametrize(
    ("setting", "value"),
    [("timeout", 0), ("timeout", -1.0), ("timeout", math.nan), ("timeout", (1.0, math.inf)), ("max_time", math.nan),
     ("max_size", 0), ("retries", -1), ("backoff", math.nan)],
)  # fmt: skip
def test_bad_settings_are_one_error(setting, value):
    from SAMMed3DLib.weights import DownloadOptions

    with pytest.raises(DownloadError, match=setting):
        DownloadOptions(**{setting: value})


# --- the command line: one line, exit 2, in seconds ---------------------------------------------------


def run_cli(capsys, *argv: str):
    start = time.monotonic()
    code = main(["download", *argv, "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    return code, err, time.monotonic() - start


def test_cli_trickle_with_timeout_2_stops(srv, tmp_path, capsys):
    """One byte every 0.5 s outlived ``--timeout 2``."""
    url = srv.add("/m.pth", DATA, trickle=0.5)
    code, err, seconds = run_cli(capsys, "--url", url, "--timeout", "2", "--retries", "0", "--cache-dir", str(tmp_path))
    assert code == 2 and len(err) == 1 and err[0].startswith("error: ") and "too slow" in err[0], err
    assert seconds < 6
    assert_clean(tmp_path)


def test_cli_endless_body_stops_at_max_size(srv, tmp_path, capsys):
    url = srv.add("/m.pth", endless=True)
    code, err, seconds = run_cli(capsys, "--url", url, "--max-size", "2M", "--cache-dir", str(tmp_path))
    assert code == 2 and len(err) == 1 and "more than 2000000 bytes" in err[0], err
    assert seconds < 6
    assert_clean(tmp_path)


def test_cli_max_time(srv, tmp_path, capsys):
    url = srv.add("/m.pth", DATA, trickle=0.1)
    code, err, seconds = run_cli(capsys, "--url", url, "--max-time", "1", "--cache-dir", str(tmp_path))
    assert code == 2 and len(err) == 1 and "took longer than the 1 s allowed" in err[0], err
    assert seconds < 4
    assert_clean(tmp_path)


@pytest.mark.parametrize(
    ("option", "value"),
    [("--timeout", "0"), ("--timeout", "-1"), ("--timeout", "nan"), ("--timeout", "inf"), ("--max-time", "nan"),
     ("--max-time", "0"), ("--max-size", "0"), ("--max-size", "lots"), ("--retries", "-1")],
)  # fmt: skip
def test_cli_bad_limits_are_one_line(tmp_path, capsys, option, value):
    code, err, _ = run_cli(capsys, "--url", "http://127.0.0.1:9/m.pth", option, value, "--cache-dir", str(tmp_path))
    assert code == 2 and len(err) == 1 and err[0].startswith(f"error: {option} must be"), err
    assert not tmp_path.joinpath("checkpoints").exists()  # refused before anything was created


def test_registry_bound_stops_an_endless_download_of_unknown_size(srv, tmp_path):
    """A registry entry without a size (as every official one) is bounded by its ``max_size``, not by the 4 GiB cap."""
    from support.http_fixtures import registry_entry, write_registry

    from SAMMed3DLib.weights import resolve_checkpoint

    url = srv.add("/m.pth", endless=True)
    registry = write_registry(tmp_path / "r.json", registry_entry("endless", [url], max_size=500_000))
    cache = tmp_path / "cache"
    start = time.monotonic()
    with pytest.raises(DownloadError, match=r"more than 500000 bytes.*registry entry's"):
        resolve_checkpoint("endless", registry=registry, cache_dir=cache, max_time=20, **FAST)
    assert time.monotonic() - start < 10
    assert_clean(cache)
    # Through the command line: one line, the same bound.
    code = main(["download", "endless", "--registry", registry, "--cache-dir", str(cache), "--quiet", "--retries", "0"])
    assert code == 2
    assert_clean(cache)


def test_a_smaller_max_size_still_wins_over_the_registry_bound(srv, tmp_path):
    from support.http_fixtures import registry_entry, write_registry

    from SAMMed3DLib.weights import resolve_checkpoint

    url = srv.add("/m.pth", endless=True)
    registry = write_registry(tmp_path / "r.json", registry_entry("endless", [url], max_size=5_000_000))
    with pytest.raises(DownloadError, match=r"more than 200000 bytes"):
        resolve_checkpoint("endless", registry=registry, cache_dir=tmp_path, max_size=200_000, max_time=20, **FAST)

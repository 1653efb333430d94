"""The ``download`` and ``models`` commands, through ``cli.main`` and as real subprocesses."""

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
from support.http_fixtures import checkpoint_bytes, closed_port_url, registry_entry, write_registry

from SAMMed3DLib.cli import main
from SAMMed3DLib.cli.models import human_size

DATA = checkpoint_bytes(500_000, seed=2)
SHA = hashlib.sha256(DATA).hexdigest()
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def reg(srv, tmp_path) -> str:
    return write_registry(
        tmp_path / "registry.json",
        registry_entry("good", [srv.add("/good.pth", DATA)], sha256=SHA, size=len(DATA), recommended=True),
        registry_entry("gone", [srv.add("/gone.pth", status=404)]),
        registry_entry("flaky", [srv.add("/flaky.pth", status=503)]),
    )


def cli(*argv: str, env: dict = None) -> subprocess.CompletedProcess:
    """``python -m SAMMed3DLib ARGV`` in a fresh interpreter."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "SAMMed3DLib", *argv], cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=60
    )


def no_partials(cache: Path) -> bool:
    return not any(p.suffix == ".part" for p in cache.rglob("*")) if cache.exists() else True


def test_download_prints_path_last_and_draws_progress(reg, tmp_path):
    cache = tmp_path / "cache"
    out = cli("download", "good", "--registry", reg, "--cache-dir", str(cache))
    assert out.returncode == 0, out.stderr
    path = Path(out.stdout.strip().splitlines()[-1])
    assert path == cache / "checkpoints" / "good.pth" and path.read_bytes() == DATA
    assert "100%" in out.stderr and "good" in out.stderr


def test_download_url_with_sha256(srv, tmp_path, capsys):
    url = srv.add("/direct/model.pth", DATA)
    code = main(["download", "--url", url, "--sha256", SHA, "--cache-dir", str(tmp_path / "c"), "--quiet"])
    path = Path(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 0 and path.name == "model.pth" and path.read_bytes() == DATA


def test_download_url_checksum_mismatch_exits_nonzero(srv, tmp_path, capsys):
    url = srv.add("/direct/model.pth", DATA)
    cache = tmp_path / "c"
    code = main(["download", "--url", url, "--sha256", "f" * 64, "--cache-dir", str(cache), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("error:") == 1 and f"expected SHA-256 {'f' * 64}, got {SHA}" in err
    assert no_partials(cache) and not list(cache.rglob("model.pth"))


@pytest.mark.parametrize(
    ("model", "message"),
    [("gone", "HTTP 404"), ("flaky", "HTTP 503 Service Unavailable (1 attempt)"), ("nope", "unknown model id 'nope'")],
)
def test_download_failures_exit_nonzero_with_one_error(reg, tmp_path, capsys, model, message):
    cache = tmp_path / "c"
    code = main(["download", model, "--registry", reg, "--cache-dir", str(cache), "--retries", "0"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("error:") == 1 and message in err, err
    assert no_partials(cache)


def test_download_connection_refused_exits_nonzero(tmp_path, capsys):
    code = main(["download", "--url", closed_port_url(), "--cache-dir", str(tmp_path), "--retries", "0"])
    assert code == 2 and "connection refused" in capsys.readouterr().err


def test_download_rejects_bad_sha256_argument(tmp_path, capsys):
    code = main(["download", "--url", "http://127.0.0.1:9/x.pth", "--sha256", "xyz", "--cache-dir", str(tmp_path)])
    assert code == 2 and "64 hexadecimal digits" in capsys.readouterr().err


def test_download_needs_exactly_one_source():
    with pytest.raises(SystemExit) as exc:
        main(["download", "good", "--url", "http://127.0.0.1:9/x.pth"])
    assert exc.value.code != 0


def test_download_with_corrupted_registry_exits_nonzero(tmp_path, capsys):
    bad = tmp_path / "r.json"
    bad.write_text('{"version": 1, "models": [')
    code = main(["download", "good", "--registry", str(bad), "--cache-dir", str(tmp_path)])
    assert code == 2 and "is not valid JSON" in capsys.readouterr().err


def test_models_lists_registry_and_cache_state(reg, tmp_path, capsys):
    cache = tmp_path / "cache"
    assert main(["download", "good", "--registry", reg, "--cache-dir", str(cache), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["models", "--registry", reg, "--cache-dir", str(cache), "--verify"]) == 0
    lines = capsys.readouterr().out.splitlines()
    good = next(line for line in lines if "good" in line)
    gone = next(line for line in lines if "gone" in line)
    assert good.startswith("*good") and human_size(len(DATA)) in good and "verified" in good
    assert " - " in gone and "?" in gone


def test_models_flags_corrupted_cache(reg, tmp_path, capsys):
    cache = tmp_path / "cache"
    main(["download", "good", "--registry", reg, "--cache-dir", str(cache), "--quiet"])
    (cache / "checkpoints" / "good.pth").write_bytes(DATA[::-1])
    capsys.readouterr()
    main(["models", "--registry", reg, "--cache-dir", str(cache), "--verify"])
    assert "DAMAGED (checksum mismatch: expected SHA-256" in capsys.readouterr().out


def test_models_never_imports_torch(tmp_path):
    code = (
        "import sys\n"
        "from SAMMed3DLib.cli import main\n"
        f"rc = main(['models', '--cache-dir', {str(tmp_path)!r}])\n"
        "import SAMMed3DLib.cli.download, SAMMed3DLib.weights\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
        "print('rc', rc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip().endswith("rc 0"), out.stderr
    assert "sam-med3d-turbo" in out.stdout


def test_models_with_a_binary_registry_is_one_error(tmp_path, capsys):
    registry = tmp_path / "vol.nii.gz"
    registry.write_bytes(bytes([0x1F, 0x8B, 0x08, 0x00, 0xFF]) + bytes(range(256)))
    code = main(["models", "--registry", str(registry), "--cache-dir", str(tmp_path / "cache")])
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert code == 2 and captured.out == "" and len(err) == 1
    assert err[0].startswith(f"error: model registry {registry} is not a UTF-8 text")

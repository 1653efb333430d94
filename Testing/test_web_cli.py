"""``web`` and ``bench-web`` from the command line: refusals are one line before anything starts; the launcher
asks for its token off the page's first visit; uploads are checked by name, kind and size; bench-web runs."""

import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from support.web_browser import chromium_missing

from SAMMed3DLib.errors import InputError
from SAMMed3DLib.web import volumes

ROOT = Path(__file__).resolve().parents[1]


def cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    # UTF-8 whatever the locale: an earlier test's Slicer libraries may have switched this process's to C.
    return subprocess.run([sys.executable, "-m", "SAMMed3DLib", *args], cwd=ROOT, capture_output=True,
                          encoding="utf-8", timeout=timeout)  # fmt: skip


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (("--host", "0.0.0.0"), "refusing to listen on 0.0.0.0 without a token"),
        (("--data", "/no/such/folder"), "not a folder"),
        (("--token-file", "/tmp/x"), "give --server URL too"),
        (("--port", "70000"), "--port must be between"),
        (("--max-upload-mb", "0"), "--max-upload-mb must be positive"),
    ],
)
def test_web_refusals_are_one_line(args, fragment):
    result = cli("web", *args)
    assert result.returncode == 2
    assert fragment in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "Traceback" not in result.stderr


def get(url: str):
    try:
        with urllib.request.urlopen(url, timeout=30) as answer:
            return answer.status, answer.headers, answer.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read()


def test_web_prints_its_address_and_wants_its_token(tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text("s3cret-token-0123456789\n")
    process = subprocess.Popen([sys.executable, "-m", "SAMMed3DLib", "web", "--port", "0", "--access-token-file",
                                str(token_file)], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               encoding="utf-8")  # fmt: skip
    try:
        line = process.stdout.readline()
        assert line.startswith("SAM-Med3D browser station at http://127.0.0.1:"), line
        assert "s3cret" not in line  # the address names the token's file, never the token
        base = line.split(" at ", 1)[1].split("?", 1)[0]
        status, _, body = get(base)
        assert status == 401 and b"access token" in body
        assert get(base + "index.html?token=wrong")[0] == 401
        status, headers, body = get(base + "index.html?token=s3cret-token-0123456789")
        assert status == 410 and b"reload the page" in body  # only a page load starts a station
    finally:
        process.terminate()
        process.wait(30)


def test_uploads_are_checked(tmp_path):
    saved = volumes.save_upload({"name": "../../etc/evil.nii.gz", "content": b"x" * 10}, tmp_path, 100)
    assert saved == tmp_path / "evil.nii.gz" and saved.read_bytes() == b"x" * 10
    with pytest.raises(InputError, match="upload limit"):
        volumes.save_upload({"name": "big.nrrd", "content": b"x" * 101}, tmp_path, 100)
    with pytest.raises(InputError, match="not a volume"):
        volumes.save_upload({"name": "notes.txt", "content": b"x"}, tmp_path, 100)
    with pytest.raises(InputError, match="empty"):
        volumes.save_upload({"name": "empty.mha", "content": b""}, tmp_path, 100)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["evil.nii.gz"]  # nothing written on refusal


@pytest.mark.skipif(chromium_missing() is not None, reason=str(chromium_missing()))
def test_bench_web_runs(tmp_path):
    report = tmp_path / "bench.json"
    result = cli("bench-web", "--clicks", "2", "--settle", "0.3", "--json", str(report), timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "tiny random-weight network" in result.stdout and "first click: encoded" in result.stdout
    assert "click→image ms" in result.stdout and "CPU " in result.stdout
    assert report.is_file()


def test_web_with_a_team_server_runs_the_engines_there(tmp_path):
    from SAMMed3DLib.cli import build_parser
    from SAMMed3DLib.cli.web import config_from

    token = tmp_path / "server-token"
    token.write_text("team-server-token-0123456789\n")
    args = build_parser("web").parse_args(["web", "--server", " http://gpu-host:8000 ", "--token-file", str(token),
                                           "--data", str(tmp_path)])  # fmt: skip
    config = config_from(args)
    assert (config.device, config.server_url, config.server_token) == ("server", "http://gpu-host:8000",
                                                                       "team-server-token-0123456789")  # fmt: skip
    assert config.data == str(tmp_path.resolve())

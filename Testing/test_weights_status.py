"""A poisoned cache cannot happen, and one that exists is seen by every reader: ``cache_status``,
``resolve_checkpoint`` (with and without download), ``models``, and the Slicer module's checks."""

import hashlib

import pytest
from support.http_fixtures import checkpoint_bytes, open_and_pinned_registry, registry_entry, write_registry

from SAMMed3DLib.cli import main
from SAMMed3DLib.errors import CheckpointError, DownloadError, InputError
from SAMMed3DLib.weights import resolve_checkpoint

DATA = checkpoint_bytes(300_000, seed=4)
SHA = hashlib.sha256(DATA).hexdigest()
FAST = dict(retries=0, backoff=0.01, timeout=(2.0, 2.0))  # seconds


@pytest.fixture
def reg(srv, tmp_path) -> str:
    """'open': no hash or size in the registry (as every official entry today); 'pinned': both recorded."""
    return open_and_pinned_registry(srv, tmp_path / "registry.json", "open", DATA)


@pytest.fixture
def cache(tmp_path):
    return tmp_path / "cache"


def cached_files(cache) -> list:
    folder = cache / "checkpoints"
    return sorted(p.name for p in folder.iterdir() if p.is_file()) if folder.exists() else []


def poison(cache, name: str = "open.pth", data: bytes = DATA[: len(DATA) // 2]):
    """A cache as an older version left it after a server cut the file short: the truncated file, and
    its own hash recorded beside it as if it were the truth."""
    path = cache / "checkpoints" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    path.with_name(name + ".sha256").write_text(f"{hashlib.sha256(data).hexdigest()}  {name}\n")
    return path


# --- nothing bad is admitted ---------------------------------------------------------------------------


def test_body_shorter_than_the_file_is_never_admitted(srv, reg, cache):
    """The server announces (and sends) only half the file: a complete-looking transfer of a truncated file."""
    srv.routes["/open.pth"].content_length = len(DATA) // 2
    with pytest.raises(DownloadError, match=r"not a complete PyTorch checkpoint"):
        resolve_checkpoint("open", registry=reg, cache_dir=cache, **FAST)
    assert cached_files(cache) == []  # no file, no .part, no .sha256


def test_a_file_that_is_not_a_checkpoint_is_never_admitted(srv, cache):
    url = srv.add("/x/model.pth", b"<html>not found</html>" * 1000)
    with pytest.raises(DownloadError, match=r"not a complete PyTorch checkpoint"):
        resolve_checkpoint(url, cache_dir=cache, **FAST)
    import io

    import torch

    foreign = io.BytesIO()  # a PyTorch file, but of another network (no image encoder)
    torch.save({"model_state_dict": {"prompt_encoder.w": torch.zeros(2), "mask_decoder.w": torch.zeros(2)}}, foreign)
    other = srv.add("/y/model.pth", foreign.getvalue())
    with pytest.raises(DownloadError, match=r"holds no SAM-Med3D weights \(no image_encoder keys\)"):
        resolve_checkpoint(other, cache_dir=cache, **FAST)
    assert not [p for p in cache.rglob("*") if p.is_file() and ".locks" not in p.parts]


def test_a_good_download_is_verified_and_its_hash_recorded(reg, cache):
    from SAMMed3DLib.weights import cache_status

    path = resolve_checkpoint("open", registry=reg, cache_dir=cache, **FAST)
    assert path.with_name("open.pth.sha256").read_text().split()[0] == SHA
    assert cache_status("open", registry=reg, cache_dir=cache).state == "cached"  # size + structure
    status = cache_status("open", registry=reg, cache_dir=cache, deep=True)
    assert (status.state, status.path, status.size, status.problem) == ("verified", path, len(DATA), None)


# --- a poisoned cache left by an older version is seen by every reader -----------------------------------


def test_cache_status_reports_a_poisoned_file_as_damaged(reg, cache):
    from SAMMed3DLib.weights import cache_status

    poison(cache)
    for deep in (False, True):
        status = cache_status("open", registry=reg, cache_dir=cache, deep=deep)
        assert status.state == "damaged" and "not a complete PyTorch checkpoint" in status.problem
    assert cached_files(cache) == ["open.pth", "open.pth.sha256"]  # reporting never deletes


def test_resolve_without_download_refuses_a_poisoned_file_offline(srv, reg, cache):
    path = poison(cache)
    with pytest.raises(CheckpointError, match=r"open .* is damaged: it is not a complete.*download it again"):
        resolve_checkpoint("open", registry=reg, cache_dir=cache, download=False)
    assert srv.hits == [] and path.read_bytes() == DATA[: len(DATA) // 2]


def test_resolve_without_download_never_fetches(srv, reg, cache):
    with pytest.raises(CheckpointError, match=r"open is not downloaded yet"):
        resolve_checkpoint("open", registry=reg, cache_dir=cache, download=False)
    assert srv.hits == [] and cached_files(cache) == []
    resolve_checkpoint("open", registry=reg, cache_dir=cache, **FAST)
    assert resolve_checkpoint("open", registry=reg, cache_dir=cache, download=False).read_bytes() == DATA
    assert len(srv.hits) == 1


def test_download_again_replaces_a_poisoned_file(srv, reg, cache):
    """Pressing Download again (resolve with download allowed) re-fetches instead of returning the bad file."""
    path = poison(cache)
    assert resolve_checkpoint("open", registry=reg, cache_dir=cache, **FAST).read_bytes() == DATA
    assert len(srv.hits) == 1
    assert path.with_name("open.pth.sha256").read_text().split()[0] == SHA


@pytest.mark.parametrize("verify", [False, True])
def test_models_command_reports_a_poisoned_file(reg, cache, capsys, verify):
    poison(cache)
    main(["models", "--registry", reg, "--cache-dir", str(cache)] + (["--verify"] if verify else []))
    line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith(" open"))
    assert "DAMAGED (it is not a complete PyTorch checkpoint" in line and "verified" not in line


def test_slicer_checks_report_a_poisoned_file(srv, reg, cache):
    """The panel's check before a click (main thread, no hashing) and the worker's both see it; neither
    touches the network or deletes the file."""
    from SAMMed3DLib.slicer.models import ModuleOptions, check_weights_present, local_checkpoint

    path = poison(cache)
    options = ModuleOptions(model="open", registry=reg, cache_dir=str(cache))
    for check in (check_weights_present, local_checkpoint):
        with pytest.raises(InputError, match=r"'open' is damaged \(it is not a complete.*press Download"):
            check(options)
    assert srv.hits == [] and path.exists()


def test_slicer_checks_accept_a_good_file(reg, cache):
    from SAMMed3DLib.slicer.models import ModuleOptions, check_weights_present, local_checkpoint

    options = ModuleOptions(model="pinned", registry=reg, cache_dir=str(cache))
    with pytest.raises(InputError, match="not downloaded yet"):
        check_weights_present(options)
    path = resolve_checkpoint("pinned", registry=reg, cache_dir=cache, **FAST)
    check_weights_present(options)
    assert local_checkpoint(options) == str(path)


# --- the path for a registry entry with a recorded size and SHA-256 ---------------------------------------


def test_recorded_size_and_hash_are_checked(srv, reg, cache):
    from SAMMed3DLib.weights import cache_status

    path = resolve_checkpoint("pinned", registry=reg, cache_dir=cache, **FAST)
    assert cache_status("pinned", registry=reg, cache_dir=cache, deep=True).state == "verified"
    path.write_bytes(DATA + b"\0")  # wrong size: seen without hashing
    status = cache_status("pinned", registry=reg, cache_dir=cache)
    assert status.state == "damaged" and status.problem == f"wrong size: {len(DATA) + 1} bytes, expected {len(DATA)}"
    changed = bytearray(DATA)
    changed[len(DATA) // 2] ^= 0xFF  # same size, structure intact: only the hash tells
    path.write_bytes(bytes(changed))
    assert cache_status("pinned", registry=reg, cache_dir=cache).state == "cached"
    status = cache_status("pinned", registry=reg, cache_dir=cache, deep=True)
    assert status.state == "damaged" and status.problem.startswith(f"checksum mismatch: expected SHA-256 {SHA}")
    assert resolve_checkpoint("pinned", registry=reg, cache_dir=cache, **FAST).read_bytes() == DATA  # fetched again


def test_a_recorded_hash_does_not_admit_a_file_that_is_not_a_checkpoint(srv, tmp_path):
    junk = b"\x00" * 50_000
    reg = write_registry(
        tmp_path / "r.json",
        registry_entry("junk", [srv.add("/junk.pth", junk)], sha256=hashlib.sha256(junk).hexdigest(), size=len(junk)),
    )
    with pytest.raises(DownloadError, match=r"not a complete PyTorch checkpoint"):
        resolve_checkpoint("junk", registry=reg, cache_dir=tmp_path / "cache", **FAST)


def test_a_file_copied_in_by_hand_is_checked_in_full_once(reg, cache):
    from SAMMed3DLib.weights import cache_status

    path = cache / "checkpoints" / "open.pth"
    path.parent.mkdir(parents=True)
    changed = bytearray(DATA)
    changed[len(DATA) // 2] ^= 0xFF  # a damaged tensor record: its CRC-32 no longer matches
    path.write_bytes(bytes(changed))
    status = cache_status("open", registry=reg, cache_dir=cache, deep=True)
    assert status.state == "damaged" and "CRC-32" in status.problem
    assert not path.with_name("open.pth.sha256").exists()
    path.write_bytes(DATA)
    assert cache_status("open", registry=reg, cache_dir=cache, deep=True).state == "verified"
    assert path.with_name("open.pth.sha256").read_text().split()[0] == SHA


def test_load_model_without_download_uses_only_the_cache(srv, tiny_checkpoint, tmp_path):
    from SAMMed3DLib import load_model

    data = tiny_checkpoint.read_bytes()
    reg = write_registry(tmp_path / "r.json", registry_entry("tiny-net", [srv.add("/tiny-net.pth", data)]))
    cache = tmp_path / "cache"
    with pytest.raises(CheckpointError, match="tiny-net is not downloaded yet"):
        load_model("tiny-net", registry=reg, cache_dir=cache, download=False)
    assert srv.hits == []
    resolve_checkpoint("tiny-net", registry=reg, cache_dir=cache, **FAST)
    model = load_model("tiny-net", registry=reg, cache_dir=cache, download=False)
    assert model.image_encoder.patch_embed.proj.weight.shape[0] == 48 and len(srv.hits) == 1

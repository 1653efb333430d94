"""``model_weights.json``: valid against its schema, and bad registries rejected with one clear error."""

import copy
import json
from pathlib import Path

import jsonschema
import pytest
from support.http_fixtures import registry_entry

from SAMMed3DLib.errors import RegistryError
from SAMMed3DLib.weights import default_registry_path, load_registry
from SAMMed3DLib.weights.confirm import confirm_url
from SAMMed3DLib.weights.registry import parse_registry
from SAMMed3DLib.weights.urls import expand_url, file_url_path, gdrive_url, url_filename

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = json.loads((ROOT / "model_weights.schema.json").read_text())
REGISTRY = json.loads((ROOT / "model_weights.json").read_text())


def test_registry_file_matches_schema():
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    jsonschema.validate(REGISTRY, SCHEMA, cls=jsonschema.Draft202012Validator)


def test_registry_file_loads_with_expected_models():
    entries = load_registry(ROOT / "model_weights.json")
    assert list(entries) == ["sam-med3d-turbo", "sam-med3d", "sam-med3d-organ", "sam-med3d-brain"]
    turbo = entries["sam-med3d-turbo"]
    assert turbo.recommended and turbo.filename == "sam_med3d_turbo.pth"
    assert turbo.urls[0] == "https://huggingface.co/blueyo0/SAM-Med3D/resolve/main/sam_med3d_turbo.pth"
    assert turbo.urls[1] == "gdrive:1MuqYRQKIZb4YPtEraK8zTKKpp-dUQIR9"
    assert all(e.license == "Apache-2.0" and "2310.15161" in e.citation for e in entries.values())


def test_unknown_sizes_and_hashes_stay_null():
    """No size or hash in the shipped registry was guessed: each is null or a well-formed value."""
    for model in REGISTRY["models"]:
        assert model["sha256"] is None or len(model["sha256"]) == 64
        assert model["size"] is None or model["size"] > 0


def test_every_entry_of_unknown_size_is_bounded():
    """A download of unknown size stops at the entry's bound: the official checkpoints are about 400 MB."""
    for entry in load_registry(ROOT / "model_weights.json").values():
        assert entry.size is not None or 400_000_000 < entry.max_size <= 1_000_000_000, entry.id


@pytest.mark.parametrize(
    "fields, message",
    [({"max_size": 0}, "'max_size' must be a positive"), ({"max_size": True}, "'max_size' must be a positive"),
     ({"max_size": "600M"}, "'max_size' must be a positive"), ({"size": 700, "max_size": 600}, "larger than")],
)  # fmt: skip
def test_bad_bounds_are_refused(fields, message):
    with pytest.raises(RegistryError, match=message):
        parse_registry(_doc(**fields))


def test_default_registry_path(monkeypatch, tmp_path):
    monkeypatch.delenv("SAMMED3D_REGISTRY", raising=False)
    assert default_registry_path() == ROOT / "model_weights.json"
    monkeypatch.setenv("SAMMED3D_REGISTRY", str(tmp_path / "r.json"))
    assert default_registry_path() == tmp_path / "r.json"


def _doc(**changes) -> dict:
    entry = registry_entry("ok", ["https://example.org/ok.pth"])
    entry.update(changes)
    return {"version": 1, "models": [entry]}


BAD = {
    "malformed url": _doc(urls=["htps//example.org/x.pth"]),
    "url with space": _doc(urls=["https://example.org/a b.pth"]),
    "ftp url": _doc(urls=["ftp://example.org/x.pth"]),
    "short gdrive id": _doc(urls=["gdrive:abc"]),
    "no urls": _doc(urls=[]),
    "sha256 too short": _doc(sha256="abc123"),
    "sha256 upper case": _doc(sha256="A" * 64),
    "negative size": _doc(size=-5),
    "size as text": _doc(size="12"),
    "filename with folder": _doc(filename="../evil.pth"),
    "bad id": _doc(id="Has Spaces"),
    "missing citation": {"version": 1, "models": [{k: v for k, v in _doc()["models"][0].items() if k != "citation"}]},
    "unknown field": _doc(md5="x"),
    "no models": {"version": 1, "models": []},
    "version 7": {**_doc(), "version": 7},
    "version true": {**_doc(), "version": True},
    "no version": {"models": _doc()["models"]},
    "unknown top-level field": {**_doc(), "mirrors": []},
    "duplicate url": _doc(urls=["https://example.org/ok.pth", "gdrive:1abcdefghijk", "https://example.org/ok.pth"]),
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_entries_fail_schema_and_loader(name):
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(BAD[name], SCHEMA, cls=jsonschema.Draft202012Validator)
    with pytest.raises(RegistryError):
        parse_registry(copy.deepcopy(BAD[name]), source="test.json")


def test_malformed_url_message_names_entry_and_url(tmp_path):
    path = tmp_path / "r.json"
    path.write_text(json.dumps(BAD["malformed url"]))
    with pytest.raises(RegistryError, match=r"models\[0\] \('ok'\): malformed URL 'htps//example.org/x.pth'"):
        load_registry(path)


def test_duplicate_ids_are_rejected():
    doc = _doc()
    doc["models"].append(copy.deepcopy(doc["models"][0]))
    with pytest.raises(RegistryError, match="'ok' appears twice"):
        parse_registry(doc)


@pytest.mark.parametrize("text", ['{"version": 1, "models": [', "", "\x00\x01", "[1, 2]"])
def test_corrupted_registry_file(tmp_path, text):
    path = tmp_path / "model_weights.json"
    path.write_text(text)
    with pytest.raises(RegistryError, match=str(path)):
        load_registry(path)


@pytest.mark.parametrize(
    "doc, message",
    [
        ({**_doc(), "version": 7}, r"'version' must be 1, got 7"),
        (_doc(urls=["gdrive:1abcdefghijk", "gdrive:1abcdefghijk"]), r"URL 'gdrive:1abcdefghijk' is listed twice"),
        ({**_doc(), "mirrors": []}, r"unknown field\(s\) 'mirrors'"),
    ],
    ids=["version", "duplicate-url", "top-level-field"],
)
def test_registry_errors_name_the_problem(doc, message):
    with pytest.raises(RegistryError, match=message):
        parse_registry(doc, source="test.json")


def test_binary_registry_file_is_one_error(tmp_path):
    path = tmp_path / "vol.nii.gz"
    path.write_bytes(bytes([0x1F, 0x8B, 0x08, 0x00, 0xFF, 0xFE]) + bytes(range(256)))
    with pytest.raises(RegistryError, match=f"model registry {path} is not a UTF-8 text"):
        load_registry(path)


def test_missing_registry_file(tmp_path):
    with pytest.raises(RegistryError, match="cannot read model registry"):
        load_registry(tmp_path / "absent.json")


def test_url_expansion(monkeypatch):
    monkeypatch.delenv("HF_ENDPOINT", raising=False)
    monkeypatch.delenv("SAMMED3D_GDRIVE_URL", raising=False)
    hf = "https://huggingface.co/blueyo0/SAM-Med3D/resolve/main/sam_med3d_turbo.pth"
    assert expand_url(hf) == hf
    assert gdrive_url("1abcdefghijk").startswith("https://drive.usercontent.google.com/download?id=1abcdefghijk")
    monkeypatch.setenv("HF_ENDPOINT", "https://hf-mirror.com/")
    assert expand_url(hf) == "https://hf-mirror.com/blueyo0/SAM-Med3D/resolve/main/sam_med3d_turbo.pth"
    assert expand_url("https://huggingface.community/x") == "https://huggingface.community/x"
    monkeypatch.setenv("SAMMED3D_GDRIVE_URL", "http://127.0.0.1:1/dl")
    assert expand_url("gdrive:1abcdefghijk") == "http://127.0.0.1:1/dl?id=1abcdefghijk&export=download"
    assert url_filename(hf) == "sam_med3d_turbo.pth"
    assert file_url_path("file:///tmp/a%20b.pth") == Path("/tmp/a b.pth")


def test_drive_confirmation_pages_of_each_kind():
    base = "https://drive.google.com/uc?export=download&id=FILE"
    form = '<form id="download-form" action="https://drive.usercontent.google.com/download" method="get">'
    form += '<input type="hidden" name="id" value="FILE"><input type="hidden" name="confirm" value="t"></form>'
    assert confirm_url(form, base) == "https://drive.usercontent.google.com/download?id=FILE&confirm=t"
    link = '<a id="uc-download-link" href="/uc?export=download&amp;confirm=AbC1&amp;id=FILE">Download anyway</a>'
    assert confirm_url(link, base) == "https://drive.google.com/uc?export=download&confirm=AbC1&id=FILE"
    cookie = confirm_url("<html>warning</html>", base, {"download_warning_123": "tok"})
    assert cookie == "https://drive.google.com/uc?export=download&id=FILE&confirm=tok"
    assert confirm_url("<html><body>Quota exceeded</body></html>", base) is None

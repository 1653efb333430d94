"""Loading official-layout, bare and prefixed checkpoints strictly and safely; clear errors otherwise."""

import argparse
import os
import pickle

import pytest
import torch
from support.checkpoints import TINY, official_layout
from support.reference import matched_pair

from SAMMed3DLib import CheckpointError, load_model
from SAMMed3DLib.modeling import SAMMed3DConfig, build_sam_med3d

SMALL_REF = SAMMed3DConfig(embed_dim=48, depth=3, num_heads=2, global_attn_indexes=(1,), prompt_embed_dim=48)


@pytest.fixture(scope="module")
def reference_pair():
    return matched_pair(SMALL_REF, seed=5)


def _assert_same_weights(model, reference):
    ref_state = reference.state_dict()
    for key, value in model.state_dict().items():
        assert torch.equal(value, ref_state[key]), key


def test_official_training_checkpoint_made_from_reference_loads_strictly(tmp_path, reference_pair):
    reference, _ = reference_pair
    payload = official_layout(reference)
    assert isinstance(payload["args"], argparse.Namespace)
    path = tmp_path / "official.pth"
    torch.save(payload, path)
    model = load_model(path)
    _assert_same_weights(model, reference)
    assert not model.training
    assert all(not p.requires_grad for p in model.parameters())


@pytest.mark.parametrize("layout", ["bare", "module_prefix", "ddp_training", "half"])
def test_other_accepted_layouts(tmp_path, reference_pair, layout):
    reference, _ = reference_pair
    state = reference.state_dict()
    if layout == "bare":
        payload = state
    elif layout == "module_prefix":
        payload = {f"module.{k}": v for k, v in state.items()}
    elif layout == "ddp_training":
        payload = {"model_state_dict": {f"module.{k}": v for k, v in state.items()}, "epoch": 1}
    else:
        payload = {k: v.half() for k, v in state.items()}
    path = tmp_path / f"{layout}.pth"
    torch.save(payload, path)
    model = load_model(path)
    if layout == "half":
        assert all(p.dtype == torch.float32 for p in model.parameters())
    else:
        _assert_same_weights(model, reference)


class _Payload:
    """A pickle that would run code on load."""

    def __reduce__(self):
        return (os.system, ("echo pwned > PWNED_MARKER",))


def test_code_in_a_pickle_is_never_executed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pth"
    torch.save({"model_state_dict": {"w": torch.zeros(1)}, "trap": _Payload()}, path)
    with pytest.raises(CheckpointError, match="refusing") as info:
        load_model(path)
    assert "weights_only" not in str(info.value)  # never advise the unsafe way to load it
    assert not (tmp_path / "PWNED_MARKER").exists()
    with open(path.with_suffix(".pkl"), "wb") as fh:
        pickle.dump(_Payload(), fh)
    with pytest.raises(CheckpointError):
        load_model(path.with_suffix(".pkl"))
    assert not (tmp_path / "PWNED_MARKER").exists()


def test_not_a_checkpoint(tmp_path):
    path = tmp_path / "notes.pth"
    path.write_text("this is a text file, not weights\n")
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint") as info:
        load_model(path)
    assert "weights_only" not in str(info.value)


def test_empty_and_missing_files(tmp_path):
    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty"):
        load_model(empty)


def test_truncated_checkpoint(tmp_path, tiny_checkpoint):
    data = tiny_checkpoint.read_bytes()
    path = tmp_path / "truncated.pth"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        load_model(path)


def test_checkpoint_of_another_architecture_lists_the_differences(tmp_path):
    torch.manual_seed(0)
    state = build_sam_med3d(TINY).state_dict()
    state.pop("mask_decoder.iou_token.weight")
    state["image_encoder.extra_head.weight"] = torch.zeros(3)
    state["image_encoder.pos_embed"] = torch.zeros(1, 16, 16, 16, TINY.embed_dim)
    path = tmp_path / "other.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointError) as info:
        load_model(path)
    message = str(info.value)
    assert "1 missing keys: mask_decoder.iou_token.weight" in message
    assert "1 unexpected keys: image_encoder.extra_head.weight" in message
    assert "image_encoder.pos_embed: file (1, 16, 16, 16, 48) vs model (1, 8, 8, 8, 48)" in message


def test_a_2d_sam_checkpoint_is_rejected_with_key_lists(tmp_path):
    state = {"image_encoder.patch_embed.proj.weight": torch.zeros(768, 3, 16, 16), "mask_decoder.x": torch.zeros(2)}
    path = tmp_path / "sam2d.pth"
    torch.save({"model": state}, path)
    with pytest.raises(CheckpointError, match="missing keys") as info:
        load_model(path)
    assert "unexpected keys: mask_decoder.x" in str(info.value)


def test_checkpoint_without_weights(tmp_path):
    path = tmp_path / "noweights.pth"
    torch.save({"epoch": 3, "losses": [1.0]}, path)
    with pytest.raises(CheckpointError, match="holds no weights"):
        load_model(path)
    torch.save([torch.zeros(1)], path)
    with pytest.raises(CheckpointError, match="not a state dict"):
        load_model(path)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_weights_are_refused(tmp_path, reference_pair, bad):
    """NaN/Inf weights gave an empty or arbitrary mask with exit 0; now loading is one CheckpointError."""
    reference, _ = reference_pair
    payload = official_layout(reference)
    state = {k: v.clone() for k, v in payload["model_state_dict"].items()}
    state["mask_decoder.iou_token.weight"][0, 0] = bad
    state["image_encoder.blocks.0.attn.qkv.weight"][3, 1] = bad
    payload["model_state_dict"] = state
    path = tmp_path / "nonfinite.pth"
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match=r"NaN or Inf weights in 2 tensor\(s\): ") as info:
        load_model(path)
    assert "image_encoder.blocks.0.attn.qkv.weight" in str(info.value)
    assert "mask_decoder.iou_token.weight" in str(info.value)


def test_loading_builds_the_network_without_torchs_compiler_stack(tiny_checkpoint):
    """The network is built on the meta device with its random initialisation skipped: torch's Python kernels for
    random fills of meta tensors import torch._dynamo and sympy (over a second of the module's first load on a
    CPU, before the user's first click). The weights are still exactly the file's (the tests above)."""
    import subprocess
    import sys
    from pathlib import Path

    code = (
        "import sys; from SAMMed3DLib import load_model\n"
        f"model = load_model({str(tiny_checkpoint)!r})\n"
        "assert not any(t.is_meta for t in [*model.parameters(), *model.buffers()])\n"
        "print(sorted({'torch._dynamo', 'sympy'} & set(sys.modules)))"
    )
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, encoding="utf-8", timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]", done.stdout

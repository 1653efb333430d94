"""Wrong tensors and devices get one clear error."""

import pytest
import torch

from SAMMed3DLib import InputError
from SAMMed3DLib.device import resolve_device, resolve_precision


def test_encoder_rejects_wrong_shape_and_dtype(tiny_model):
    with pytest.raises(ValueError, match=r"expects a \[B, 1, 128, 128, 128\] tensor, got \[1, 1, 64, 64, 64\]"):
        tiny_model.image_encoder(torch.zeros(1, 1, 64, 64, 64))
    with pytest.raises(ValueError, match="got \\[128, 128, 128\\]"):
        tiny_model.image_encoder(torch.zeros(128, 128, 128))
    with pytest.raises(TypeError, match="floating-point"):
        tiny_model.image_encoder(torch.zeros(1, 1, 128, 128, 128, dtype=torch.int16))


def test_prompt_encoder_rejects_bad_prompts(tiny_model):
    pe = tiny_model.prompt_encoder
    with pytest.raises(ValueError, match="points must be"):
        pe(points=(torch.zeros(1, 2, 2), torch.ones(1, 2)), boxes=None, masks=None)
    with pytest.raises(ValueError, match="labels must be"):
        pe(points=(torch.zeros(1, 2, 3), torch.tensor([[1, 5]])), boxes=None, masks=None)
    with pytest.raises(ValueError, match="mask prompt must be"):
        pe(points=None, boxes=None, masks=torch.zeros(1, 1, 64, 64, 64))
    with pytest.raises(ValueError, match="no box prompts"):
        pe(points=None, boxes=torch.zeros(1, 6), masks=None)


def test_decode_accepts_integer_labels_and_previous_logits(tiny_model):
    emb = tiny_model.encode(torch.randn(1, 1, 128, 128, 128))
    coords = torch.tensor([[[64.0, 64.0, 64.0], [10.0, 20.0, 30.0]]])
    logits, iou = tiny_model.decode(emb, coords, torch.tensor([[1, 0]]))
    again, _ = tiny_model.decode(emb, coords, torch.tensor([[1, 0]]), mask_logits=logits)
    assert logits.shape == again.shape == (1, 1, 32, 32, 32)
    assert not torch.equal(logits, again)  # the mask prompt is used


def test_device_resolution_falls_back_to_cpu():
    assert resolve_device("cpu").type == "cpu"
    if not torch.cuda.is_available():
        assert resolve_device("cuda").type == "cpu"
        assert resolve_device("auto").type in ("cpu", "mps")
    with pytest.raises(InputError, match="unknown device"):
        resolve_device("tpu")


def test_half_precision_is_a_gpu_option():
    assert resolve_precision("fp32", torch.device("cpu")) == torch.float32
    with pytest.raises(InputError, match="GPU option"):
        resolve_precision("bf16", torch.device("cpu"))
    with pytest.raises(InputError, match="unknown precision"):
        resolve_precision("int8", torch.device("cpu"))
    assert resolve_precision("bf16", torch.device("cuda")) == torch.bfloat16

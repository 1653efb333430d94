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


def test_half_precision_on_a_cpu_only_where_it_has_bf16_instructions(monkeypatch):
    from SAMMed3DLib import device

    cpu = torch.device("cpu")
    assert resolve_precision("fp32", cpu) == torch.float32
    with pytest.raises(InputError, match="unknown precision"):
        resolve_precision("int8", cpu)
    assert resolve_precision("bf16", torch.device("cuda")) == torch.bfloat16
    monkeypatch.setattr(device, "cpu_has_bf16_products", lambda: False)
    with pytest.raises(InputError, match="GPU option on this CPU.*AVX512-BF16 or AMX"):
        resolve_precision("bf16", cpu)
    monkeypatch.setattr(device, "cpu_has_bf16_products", lambda: True)
    assert resolve_precision("bf16", cpu) == torch.bfloat16
    with pytest.raises(InputError, match="GPU option"):  # fp16 products are emulated on CPUs: far slower
        resolve_precision("fp16", cpu)


def test_a_bf16_encoder_on_a_cpu_keeps_everything_but_its_matrix_products_in_fp32(tiny_model):
    import copy

    from SAMMed3DLib.modeling.common import Linear

    lower = copy.deepcopy(tiny_model)
    lower.set_encoder_precision(torch.bfloat16)
    dtypes = {name: p.dtype for name, p in lower.image_encoder.named_parameters()}
    modules = lower.image_encoder.named_modules()
    linear = {f"{n}.{p}" for n, m in modules if isinstance(m, Linear) for p in ("weight", "bias")}
    assert linear and all(dtypes[n] == torch.bfloat16 for n in linear)
    assert all(d == torch.float32 for n, d in dtypes.items() if n not in linear)  # norms, convolutions, positions
    assert list(lower.state_dict()) == list(tiny_model.state_dict())  # the checkpoint's names, unchanged
    crop = torch.randn(1, 1, 128, 128, 128, generator=torch.Generator().manual_seed(0))
    exact, approx = tiny_model.encode(crop), lower.encode(crop)
    assert approx.dtype == torch.float32 and not torch.equal(exact, approx)
    assert float((approx - exact).norm() / exact.norm()) < 0.02  # bf16 keeps ~3 significant digits

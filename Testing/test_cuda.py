"""The CUDA path: the same network, sessions and precisions on a GPU as on the CPU.

These run only where PyTorch sees a CUDA device (CI has none; they were run on an H100). TF32 is switched
off for the comparisons so that fp32 on the GPU means fp32.
"""

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from support.phantoms import centre_ras, sphere_phantom
from support.reference import matched_pair

from SAMMed3DLib import InteractiveSession, load_model
from SAMMed3DLib.bench.network import fixed_inputs, random_weights
from SAMMed3DLib.metrics import dice
from SAMMed3DLib.modeling import SAMMed3DConfig, decode_step

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

TOL = 1e-4


@pytest.fixture(autouse=True)
def strict_fp32():
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.float().cpu() - b.float().cpu()).abs().max().item()


@pytest.mark.slow
def test_official_size_on_cuda_matches_the_reference_on_cuda():
    reference, ours = (m.cuda() for m in matched_pair(SAMMed3DConfig()))
    crop, coords, labels, mask = (t.cuda() for t in fixed_inputs())
    with torch.inference_mode():
        ref_emb, our_emb = reference.image_encoder(crop), ours.image_encoder(crop)
        assert _max_diff(ref_emb, our_emb) <= TOL
        ref_logits, ref_iou = decode_step(reference, ref_emb, coords, labels, mask)
        logits, iou = decode_step(ours, our_emb, coords, labels, mask)
    assert _max_diff(ref_logits, logits) <= TOL
    assert _max_diff(ref_iou, iou) <= TOL


def test_cuda_and_cpu_give_the_same_logits(tiny_checkpoint):
    cpu, gpu = load_model(tiny_checkpoint, device="cpu"), load_model(tiny_checkpoint, device="cuda")
    assert all(p.is_cuda for p in gpu.parameters()) and gpu.device.type == "cuda"
    crop = torch.randn(1, 1, 128, 128, 128, generator=torch.Generator().manual_seed(3))
    coords, labels = torch.tensor([[[64.0, 60.0, 70.0], [30.0, 90.0, 64.0]]]), torch.tensor([[1, 0]])
    cpu_emb, gpu_emb = cpu.encode(crop), gpu.encode(crop)
    assert gpu_emb.is_cuda and _max_diff(cpu_emb, gpu_emb) <= TOL
    cpu_logits, _ = cpu.decode(cpu_emb, coords, labels, None)
    gpu_logits, _ = gpu.decode(gpu_emb, coords, labels, None)
    assert _max_diff(cpu_logits, gpu_logits) <= TOL


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_half_precision_encoder_on_cuda_keeps_the_mask(precision, tmp_path):
    path = tmp_path / "full.pt"
    torch.save(random_weights(), path)
    full, half = load_model(path, device="cuda"), load_model(path, device="cuda", precision=precision)
    assert half.image_encoder.pos_embed.dtype != torch.float32
    assert half.mask_decoder.iou_prediction_head.layers[0].weight.dtype == torch.float32
    crop, coords, labels, mask = fixed_inputs()
    logits_full, _ = full.decode(full.encode(crop), coords, labels, mask)
    logits_half, _ = half.decode(half.encode(crop), coords, labels, mask)
    assert dice((logits_full > 0).numpy(), (logits_half > 0).numpy()) >= 0.98


def test_session_on_cuda_gives_the_cpu_mask(tiny_checkpoint):
    image, truth = sphere_phantom()
    point_ras = centre_ras(truth)
    masks = []
    for device in ("cpu", "cuda"):
        session = InteractiveSession(load_model(tiny_checkpoint, device=device), image)
        session.add_click(point_ras)
        result = session.add_click(point_ras, positive=False)
        masks.append(sitk.GetArrayFromImage(result.mask))
        assert result.timings["total"] > 0
    differing = np.count_nonzero(masks[0] != masks[1])
    assert masks[0].any() and differing <= 1e-4 * masks[0].size

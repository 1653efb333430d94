"""Our network against the official implementation (medim), same random weights, ≤ 1e-4."""

import pytest
import torch
from support.reference import matched_pair

from SAMMed3DLib.modeling import SAMMed3DConfig, decode_step

TOL = 1e-4
SMALL = SAMMed3DConfig(
    embed_dim=96, depth=4, num_heads=3, window_size=14, global_attn_indexes=(1, 3), prompt_embed_dim=96
)


def _prompts(seed: int = 1):
    gen = torch.Generator().manual_seed(seed)
    coords = torch.randint(0, 128, (2, 4, 3), generator=gen).float()
    labels = torch.tensor([[1, 0, 1, 1], [1, 1, 0, 0]])
    mask = torch.randn(2, 1, 32, 32, 32, generator=gen) * 3
    return coords, labels, mask


def _compare(config: SAMMed3DConfig, batch: int) -> None:
    reference, ours = matched_pair(config)
    crop = torch.randn(batch, 1, 128, 128, 128, generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        ref_emb, our_emb = reference.image_encoder(crop), ours.image_encoder(crop)
        assert our_emb.shape == (batch, config.prompt_embed_dim, 8, 8, 8)
        assert (ref_emb - our_emb).abs().max().item() <= TOL
        coords, labels, mask = _prompts()
        for mask_prompt in (None, mask):
            ref_sparse, ref_dense = reference.prompt_encoder(points=(coords, labels), boxes=None, masks=mask_prompt)
            sparse, dense = ours.prompt_encoder(points=(coords, labels), boxes=None, masks=mask_prompt)
            assert (ref_sparse - sparse).abs().max().item() <= TOL
            assert (ref_dense - dense).abs().max().item() <= TOL
            emb = ref_emb[:1].expand(2, -1, -1, -1, -1)
            ref_logits, ref_iou = decode_step(reference, emb, coords, labels, mask_prompt)
            logits, iou = ours.mask_decoder(
                image_embeddings=emb,
                image_pe=ours.prompt_encoder.get_dense_pe(),
                sparse_prompt_embeddings=sparse,
                dense_prompt_embeddings=dense,
                multimask_output=False,
            )
            assert logits.shape == (2, 1, 32, 32, 32) and iou.shape == (2, 1)
            assert (ref_logits - logits).abs().max().item() <= TOL
            assert (ref_iou - iou).abs().max().item() <= TOL
        assert (reference.prompt_encoder.get_dense_pe() - ours.prompt_encoder.get_dense_pe()).abs().max() <= TOL


def test_small_network_matches_reference():
    _compare(SMALL, batch=2)


@pytest.mark.slow
def test_official_size_network_matches_reference():
    """The real ViT-B build (100.5 M parameters), the one sam_med3d_turbo.pth holds."""
    _compare(SAMMed3DConfig(), batch=1)


def test_official_parameter_count_and_keys():
    reference, ours = matched_pair(SMALL)
    assert list(ours.state_dict()) == list(reference.state_dict())
    from SAMMed3DLib.modeling import build_sam_med3d

    with torch.device("meta"):
        full = build_sam_med3d()
    assert sum(p.numel() for p in full.parameters()) == 100_509_232


def test_fast_window_path_equals_direct_padded_windows():
    """The default encoder path (only the 512 real tokens) against full attention over the padded window."""
    _, ours = matched_pair(SMALL)
    block = next(b for b in ours.image_encoder.blocks if b.window_size)
    tokens = torch.randn(2, 8, 8, 8, SMALL.embed_dim, generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        assert (block._attend(tokens) - block.attend_windows(tokens)).abs().max().item() <= 1e-5


def test_multimask_output_returns_three_masks():
    _, ours = matched_pair(SMALL)
    coords, labels, _ = _prompts()
    with torch.inference_mode():
        emb = torch.randn(1, SMALL.prompt_embed_dim, 8, 8, 8)
        logits, iou = decode_step(ours, emb, coords[:1], labels[:1], None, multimask_output=True)
    assert logits.shape == (1, 3, 32, 32, 32) and iou.shape == (1, 3)


def test_bias_written_into_a_buffer_slice_equals_the_plain_result():
    from SAMMed3DLib.modeling.rel_pos import combine_terms

    gen = torch.Generator().manual_seed(4)
    n, window = 5, 9
    t_d, t_h, t_w = (torch.randn(3, n, n, w, window, generator=gen) for w in (n, window, window))
    with torch.no_grad():
        plain = combine_terms(t_d, t_h, t_w, n)
        buffer = torch.full((3, n**3, n**3 + 1), float("nan"))
        combine_terms(t_d, t_h, t_w, n, out=buffer[:, :, : n**3])
    assert torch.equal(buffer[:, :, : n**3], plain) and buffer[:, :, n**3].isnan().all()
    expected = t_d[:, :, :, :, None, None, :n] + t_h[:, :, :, None, :n, None, :n] + t_w[:, :, :, None, None, :n, :n]
    assert torch.allclose(plain, expected.reshape(3, n**3, n**3), atol=1e-5)


def test_encoder_supports_autograd_outside_inference():
    from SAMMed3DLib.modeling import TINY_CONFIG, build_sam_med3d

    torch.manual_seed(0)
    model = build_sam_med3d(TINY_CONFIG)
    model.image_encoder(torch.randn(1, 1, 128, 128, 128)).sum().backward()
    rel = model.image_encoder.blocks[0].attn.rel_pos_h.grad
    assert rel is not None and rel.abs().sum() > 0

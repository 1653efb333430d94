"""The official implementation as a test-only reference: the PyPI package ``medim`` (model "SAM-Med3D").

Used by the identity tests and the benchmark; never imported by the runtime package.
"""

import contextlib
import io

import torch

from SAMMed3DLib.modeling import SAMMed3DConfig, build_sam_med3d


def build_reference(config: SAMMed3DConfig = SAMMed3DConfig()) -> torch.nn.Module:
    """medim's SAM-Med3D with the same hyper-parameters (its decoder MLP width is fixed at 2048)."""
    import medim

    if config.decoder_mlp_dim != 2048 or config.mlp_ratio != 4.0 or config.window_size != 14:
        raise ValueError("medim builds only mlp_ratio 4, window 14 and a 2048-wide decoder MLP")
    with contextlib.redirect_stdout(io.StringIO()):  # medim prints on creation
        model = medim.create_model(
            "SAM-Med3D",
            encoder_embed_dim=config.embed_dim,
            encoder_depth=config.depth,
            encoder_num_heads=config.num_heads,
            encoder_global_attn_indexes=list(config.global_attn_indexes),
            prompt_embed_dim=config.prompt_embed_dim,
        )
    return model.eval()


def randomize_failable_(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Non-zero relative-position tables, absolute position embedding and biases: zero-initialised
    parameters would hide a wrong relative-position broadcast or padding treatment."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "rel_pos" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
            elif "pos_embed" in name or name.endswith("bias"):
                p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
    return model


def matched_pair(config: SAMMed3DConfig = SAMMed3DConfig(), seed: int = 0):
    """(reference, ours) holding identical random weights; ours loaded strictly from the reference's keys."""
    torch.manual_seed(seed)
    reference = randomize_failable_(build_reference(config), seed)
    ours = build_sam_med3d(config).eval()
    ours.load_state_dict(reference.state_dict(), strict=True)
    return reference, ours

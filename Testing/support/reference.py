"""The official implementation as a test-only reference: the PyPI package ``medim`` (model "SAM-Med3D").

Used by the identity tests and the benchmark; never imported by the runtime package.
"""

import contextlib
import io

import torch

from SAMMed3DLib.bench.network import randomize_zero_initialised_
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


def matched_pair(config: SAMMed3DConfig = SAMMed3DConfig(), seed: int = 0):
    """(reference, ours) holding identical random weights; ours loaded strictly from the reference's keys."""
    torch.manual_seed(seed)
    # Relative tables at std 0.5: large enough that a wrong broadcast changes the output well past 1e-4.
    reference = randomize_zero_initialised_(build_reference(config), seed, rel_pos_std=0.5)
    ours = build_sam_med3d(config).eval()
    ours.load_state_dict(reference.state_dict(), strict=True)
    return reference, ours

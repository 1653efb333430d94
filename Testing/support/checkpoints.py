"""Test-data maker: small random-weight SAM-Med3D checkpoints in the official training layout.

``TINY`` (the library's ``TINY_CONFIG``) keeps every official key name and the 128³ → 8³ geometry
(window 14, global blocks, relative positions) with narrow layers: ~2 MB, encodes in milliseconds.
"""

import argparse
from pathlib import Path
from typing import Optional

import torch

from SAMMed3DLib.bench.network import randomize_zero_initialised_
from SAMMed3DLib.modeling import TINY_CONFIG, SAMMed3D, SAMMed3DConfig, build_sam_med3d

TINY = TINY_CONFIG


def official_layout(model: SAMMed3D, epoch: int = 3) -> dict:
    """A dict shaped like the official training checkpoints (weights under ``model_state_dict``)."""
    opt = torch.optim.AdamW([p for p in model.parameters()][:3], lr=8e-5, betas=(0.9, 0.999))
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[120, 180], gamma=0.1)
    return {
        "epoch": epoch,
        "model_state_dict": model.state_dict(),
        "optimizer_state_dict": opt.state_dict(),
        "lr_scheduler_state_dict": sched.state_dict(),
        "losses": [0.9, 0.7, 0.5],
        "dices": [0.2, 0.4, 0.6],
        "best_loss": 0.5,
        "best_dice": 0.6,
        "args": argparse.Namespace(task_name="test", img_size=128, lr=8e-5, multi_click=True),
        "used_datas": ["a/b/imagesTr", "c/d/imagesTr"],
    }


def make_checkpoint(path: Path, config: Optional[SAMMed3DConfig] = TINY, seed: int = 0) -> Path:
    """Write a random-weight checkpoint in the official layout to ``path`` and return it."""
    torch.manual_seed(seed)
    model = randomize_zero_initialised_(build_sam_med3d(config), seed)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(official_layout(model), path)
    return path


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out", type=Path)
    parser.add_argument("--full", action="store_true", help="official ViT-B size instead of TINY")
    ns = parser.parse_args()
    print(make_checkpoint(ns.out, SAMMed3DConfig() if ns.full else TINY))

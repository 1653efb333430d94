"""``load_model``: a checkpoint (path or registry id) → the SAM-Med3D network ready for inference."""

import os
from typing import Callable, Optional, Union

import torch

from .checkpoint import extract_state_dict, load_weights_strict, read_checkpoint
from .device import resolve_device, resolve_precision
from .errors import CheckpointError
from .modeling import SAMMed3D, SAMMed3DConfig, build_sam_med3d

ProgressCallback = Callable[[int, Optional[int], float], Optional[bool]]


def resolve_weights(spec: "os.PathLike[str] | str", **download_options) -> str:
    """A local file path for ``spec``: an existing path, a ``file://`` URL, or a registry id (downloaded once)."""
    spec = os.fspath(spec)
    if os.path.isfile(spec):
        return spec
    from .weights import resolve_checkpoint  # downloads only when the spec is not a local file

    return os.fspath(resolve_checkpoint(spec, **download_options))


def load_model(
    checkpoint: Union["os.PathLike[str]", str],
    device: Union[str, torch.device] = "cpu",
    precision: str = "fp32",
    **download_options,
) -> SAMMed3D:
    """The SAM-Med3D network in eval mode on ``device`` with the weights of ``checkpoint``.

    ``checkpoint``: a file (official training checkpoint, bare state dict, or ``module.``-prefixed
    keys), a ``file://`` URL, or a registry id from ``model_weights.json`` (downloaded and cached;
    ``download_options`` go to :func:`SAMMed3DLib.weights.resolve_checkpoint`). ``device``: ``auto``,
    ``cpu``, ``cuda``, ``mps`` or a ``torch.device``. ``precision``: ``fp32`` (default), or ``bf16`` /
    ``fp16`` for the image encoder on a GPU.
    """
    path = resolve_weights(checkpoint, **download_options)
    state = extract_state_dict(read_checkpoint(path), source=path)
    try:
        config = SAMMed3DConfig.from_state_dict(state)
    except (KeyError, IndexError, ZeroDivisionError) as exc:
        raise CheckpointError(f"{path} is not a SAM-Med3D checkpoint: it has no tensor {exc}") from exc
    model = build_sam_med3d(config)
    load_weights_strict(model, state, source=path)
    target = device if isinstance(device, torch.device) else resolve_device(device)
    model = model.to(target).eval()
    model.image_encoder.to(resolve_precision(precision, target))
    for p in model.parameters():
        p.requires_grad_(False)
    return model

"""``load_model``: a checkpoint (path or registry id) → the SAM-Med3D network ready for inference."""

import os
from typing import Mapping, Union

import torch
from torch.overrides import TorchFunctionMode

from .checkpoint import extract_state_dict, load_weights_strict, read_checkpoint
from .device import resolve_device, resolve_precision
from .modeling import SAMMed3D, SAMMed3DConfig, build_sam_med3d


class _SkipRandomInit(TorchFunctionMode):
    """Inside ``torch.device("meta")``: the layers' random initialisation becomes a no-op and random tensors
    become empty ones. The strict load replaces every value anyway, and torch runs random fills of meta tensors
    through its Python reference kernels, whose first use imports torch._dynamo and sympy (1.1 s of a model's
    first load on a CPU, before the user's first click)."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if getattr(func, "__module__", None) == "torch.nn.init":
            return args[0] if args else kwargs["tensor"]  # the initialisers fill their tensor in place
        if func in (torch.randn, torch.rand):
            kwargs.pop("generator", None)
            return torch.empty(*args, **kwargs)
        return func(*args, **kwargs)


def _network_for(state: Mapping[str, torch.Tensor]) -> SAMMed3D:
    """A network of the architecture the weights describe. For a foreign file that describes none,
    the official one, so that the strict load lists exactly which keys and shapes differ."""
    # Built on the meta device: no time is spent initialising weights the file replaces.
    with torch.device("meta"), _SkipRandomInit():
        try:
            return build_sam_med3d(SAMMed3DConfig.from_state_dict(state))
        except (KeyError, IndexError, ZeroDivisionError, AttributeError, ValueError, RuntimeError):
            return build_sam_med3d()


def load_model(
    checkpoint: Union["os.PathLike[str]", str],
    device: Union[str, torch.device] = "cpu",
    precision: str = "fp32",
    *,
    download: bool = True,
    **download_settings,
) -> SAMMed3D:
    """The SAM-Med3D network in eval mode on ``device`` with the weights of ``checkpoint``.

    ``checkpoint``: a file (official training checkpoint, bare state dict, or ``module.``-prefixed
    keys), a ``file://`` URL, a registry id from ``model_weights.json`` or an http(s) URL (downloaded
    once and cached, see :func:`SAMMed3DLib.weights.resolve_checkpoint`). ``device``: ``auto``,
    ``cpu``, ``cuda``, ``mps`` or a ``torch.device``. ``precision``: ``fp32`` (default), or ``bf16`` /
    ``fp16`` for the image encoder on a GPU (bf16 also on a CPU with bf16 instructions, see
    :func:`~SAMMed3DLib.device.resolve_precision`). ``download=False`` uses only a checkpoint already in the
    cache (one CheckpointError if it is missing or damaged); ``download_settings``: ``options``
    (a :class:`~SAMMed3DLib.weights.DownloadOptions`) or its fields as keywords (``registry``,
    ``cache_dir``, ``retries``, ...). Weights holding NaN or Inf are refused (CheckpointError).
    """
    from .weights import resolve_checkpoint  # torch-free; fetches only registry ids and URLs

    path = os.fspath(resolve_checkpoint(checkpoint, download=download, **download_settings))
    state = extract_state_dict(read_checkpoint(path), source=path)
    model = _network_for(state)
    load_weights_strict(model, state, source=path)
    target = device if isinstance(device, torch.device) else resolve_device(device)
    model = model.to(target).eval()
    model.set_encoder_precision(resolve_precision(precision, target))
    for p in model.parameters():
        p.requires_grad_(False)
    if target.type != "cpu":
        warm_up(model)
    return model


def warm_up(model: SAMMed3D) -> None:
    """Run the network once on a blank crop and one click, so that a GPU's one-time set-up (context, kernel
    selection, workspace allocation: about half a second on an H100) is paid when the model loads rather
    than on the user's first click."""
    with torch.inference_mode():
        embedding = model.encode(torch.zeros(1, 1, 128, 128, 128))
        model.decode(embedding, torch.full((1, 1, 3), 64.0), torch.ones(1, 1, dtype=torch.long), None)
    if model.device.type == "cuda":
        torch.cuda.synchronize(model.device)

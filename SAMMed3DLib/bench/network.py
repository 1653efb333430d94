"""Network benchmark: our SAM-Med3D against the official implementation (``medim``), same random weights.

Each implementation runs in its own child process so that its peak memory is its own. The parent
checks identity (image embedding and low-res logits) and prints medians and the speed-up ratios.
``medim`` is a test-only reference: it is imported only here, only in the child, and only when asked.
"""

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional

import torch

from ..errors import SAMMed3DError
from ..metrics import dice
from ..modeling import build_sam_med3d, decode_step
from .machine import describe, machine

IDENTITY_TOLERANCE = 1e-4
N_CLICKS = 5


@dataclass
class BenchSettings:
    """What to run: repeats per implementation, device, threads, and the precision of a deviation check."""

    repeats: int = 5
    reference_repeats: int = 3
    device: str = "cpu"
    threads: Optional[int] = None
    precision: Optional[str] = None
    with_reference: bool = True


def randomize_zero_initialised_(
    model: torch.nn.Module, seed: int = 0, rel_pos_std: float = 0.1, std: float = 0.1
) -> torch.nn.Module:
    """Give the parameters that start at zero (relative-position tables, absolute position embedding,
    biases) seeded normal values in place, so that a wrong relative-position or padding treatment
    shows up in identity checks instead of hiding behind zeros. Works on any network with the
    official parameter names (ours or the reference)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "rel_pos" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * rel_pos_std)
            elif "pos_embed" in name or name.endswith("bias"):
                p.copy_(torch.randn(p.shape, generator=gen) * std)
    return model


def random_weights(seed: int = 0) -> Dict[str, torch.Tensor]:
    """Official-architecture weights with every zero-initialised parameter made non-zero."""
    torch.manual_seed(seed)
    return randomize_zero_initialised_(build_sam_med3d(), seed).state_dict()


def fixed_inputs(seed: int = 1):
    """The crop ``[1, 1, 128³]``, ``N_CLICKS`` clicks ``[1, N, 3]`` with labels, and a previous-logits prompt."""
    gen = torch.Generator().manual_seed(seed)
    crop = torch.randn(1, 1, 128, 128, 128, generator=gen)
    coords = torch.randint(16, 112, (1, N_CLICKS, 3), generator=gen).float()
    labels = torch.tensor([[1, 1, 0, 1, 0]])
    mask = torch.randn(1, 1, 32, 32, 32, generator=gen)
    return crop, coords, labels, mask


def peak_rss_mb() -> Optional[float]:
    """This process's peak resident memory in MB (None where the platform does not report it)."""
    try:
        import resource  # Unix only
    except ImportError:
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024**2 if sys.platform == "darwin" else peak / 1024


def run_in_child(module: str, args: List[str], label: str, threads: Optional[int] = None) -> None:
    """Run ``python -m module *args`` (one benchmarked implementation) with its own memory accounting.

    Raises one SAMMed3DError with the child's last error line if it fails.
    """
    env = dict(os.environ)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    result = subprocess.run([sys.executable, "-m", module, *args], env=env, capture_output=True, text=True)
    if result.returncode != 0:
        lines = (result.stderr or result.stdout).strip().splitlines()
        raise SAMMed3DError(f"the {label} benchmark run failed: {lines[-1] if lines else result.returncode}")


def seconds(fn: Callable[[], object]) -> float:
    """Wall time in seconds of one call of ``fn``."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _repeated_seconds(fn: Callable[[], torch.Tensor], repeats: int, device: torch.device) -> List[float]:
    """Wall times in seconds of ``repeats`` calls after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return times


def load_network(kind: str, state_path: str, device: torch.device, precision: str) -> torch.nn.Module:
    """``reference`` (medim, test-only) or ``ours`` in eval mode on ``device`` with the saved random weights."""
    state = torch.load(state_path, map_location="cpu", weights_only=True)
    if kind == "reference":
        try:
            import medim  # noqa: F401 - test-only reference
        except ImportError as exc:
            raise SAMMed3DError(
                "the reference implementation `medim` is not installed (pip install -e '.[test]'); "
                "run with --no-reference to time SAMMed3DLib alone"
            ) from exc
        import contextlib
        import io

        with contextlib.redirect_stdout(io.StringIO()):
            model = medim.create_model("SAM-Med3D")
        model.load_state_dict(state, strict=True)
    else:
        model = build_sam_med3d()
        model.load_state_dict(state, strict=True)
    model = model.to(device).eval()
    from ..device import precision_dtype

    if kind == "reference":
        model.image_encoder.to(precision_dtype(precision))
    else:  # as load_model sets it (on a CPU: bf16 matrix products only)
        model.set_encoder_precision(precision_dtype(precision))
    return model


def run_child(kind: str, state_path: str, out_path: str, repeats: int, device_name: str, precision: str) -> None:
    """Time one implementation and save its outputs and figures to ``out_path``."""
    device = torch.device(device_name)
    if device.type == "cuda":  # fp32 means fp32 on both sides (PyTorch lets cuDNN convolutions use TF32)
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    model = load_network(kind, state_path, device, precision)
    crop, coords, labels, mask = (t.to(device) for t in fixed_inputs())
    dtype = model.image_encoder.pos_embed.dtype
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    with torch.inference_mode():
        embedding = model.image_encoder(crop.to(dtype)).float()

        def decode():
            return decode_step(model, embedding, coords, labels, mask)[0]

        encode_times = _repeated_seconds(lambda: model.image_encoder(crop.to(dtype)), repeats, device)
        decode_times = _repeated_seconds(decode, max(repeats, 10), device)
        logits = decode()
    figures = {
        "encode_s": encode_times,
        "decode_s": decode_times,
        "peak_rss_mb": peak_rss_mb(),
        "peak_gpu_mb": torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else None,
        "threads": torch.get_num_threads(),
    }
    torch.save({"embedding": embedding.cpu(), "logits": logits.float().cpu(), "figures": figures}, out_path)


def _spawn(kind: str, state: str, workdir: str, settings: BenchSettings, precision: str = "fp32") -> dict:
    out = os.path.join(workdir, f"{kind}-{precision}.pt")
    repeats = settings.reference_repeats if kind == "reference" else settings.repeats
    run_in_child(__name__, [kind, state, out, str(repeats), settings.device, precision], kind, settings.threads)
    return torch.load(out, weights_only=True)


def run_benchmark(settings: BenchSettings, say: Callable[[str], None] = print) -> dict:
    """Run the children, print the report through ``say`` and return the figures as a dict."""
    with tempfile.TemporaryDirectory(prefix="sammed3d-bench-") as workdir:
        state = os.path.join(workdir, "weights.pt")
        torch.save(random_weights(), state)
        ours = _spawn("ours", state, workdir, settings)
        reference = _spawn("reference", state, workdir, settings) if settings.with_reference else None
        half = _spawn("ours", state, workdir, settings, settings.precision) if settings.precision else None
    report = summarise(ours, reference, half, settings)
    for line in format_report(report, settings):
        say(line)
    return report


def summarise(ours: dict, reference: Optional[dict], half: Optional[dict], settings: BenchSettings) -> dict:
    fig = ours["figures"]
    report = {
        "device": settings.device,
        "threads": fig["threads"],
        "torch": torch.__version__,
        "machine": machine(),
        "ours": {
            "encode_median_s": statistics.median(fig["encode_s"]),
            "decode_median_s": statistics.median(fig["decode_s"]),
            "peak_rss_mb": fig["peak_rss_mb"],
            "peak_gpu_mb": fig["peak_gpu_mb"],
        },
    }
    if reference is not None:
        ref = reference["figures"]
        report["reference"] = {
            "encode_median_s": statistics.median(ref["encode_s"]),
            "decode_median_s": statistics.median(ref["decode_s"]),
            "peak_rss_mb": ref["peak_rss_mb"],
            "peak_gpu_mb": ref["peak_gpu_mb"],
        }
        report["encoder_speedup"] = report["reference"]["encode_median_s"] / report["ours"]["encode_median_s"]
        report["decoder_speedup"] = report["reference"]["decode_median_s"] / report["ours"]["decode_median_s"]
        report["embedding_max_abs_diff"] = float((ours["embedding"] - reference["embedding"]).abs().max())
        report["logits_max_abs_diff"] = float((ours["logits"] - reference["logits"]).abs().max())
        report["identical"] = max(report["embedding_max_abs_diff"], report["logits_max_abs_diff"]) <= IDENTITY_TOLERANCE
    if half is not None:
        report["precision_check"] = {
            "precision": settings.precision,
            "encode_median_s": statistics.median(half["figures"]["encode_s"]),
            "embedding_max_abs_diff": float((half["embedding"] - ours["embedding"]).abs().max()),
            "logits_max_abs_diff": float((half["logits"] - ours["logits"]).abs().max()),
            "mask_dice_vs_fp32": dice((half["logits"] > 0).cpu().numpy(), (ours["logits"] > 0).cpu().numpy()),
        }
    return report


def _fmt_time(seconds: float) -> str:
    return f"{seconds:.3f} s" if seconds >= 1 else f"{seconds * 1000:.1f} ms"


def format_report(report: dict, settings: BenchSettings) -> List[str]:
    ours = report["ours"]
    lines = [
        f"SAM-Med3D network benchmark: {report['device']}, {report['threads']} threads, torch {report['torch']}, "
        f"128³ crop, random weights, {N_CLICKS} clicks + previous logits, median of {settings.repeats} "
        f"(reference {settings.reference_repeats})",
        *([describe(report["machine"])] if "machine" in report else []),
        f"{'':24}{'reference (medim)':>20}{'SAMMed3DLib':>16}{'speed-up':>11}",
    ]
    ref = report.get("reference")
    for label, key, ratio in (
        ("image encoder", "encode_median_s", "encoder_speedup"),
        ("prompt enc. + decoder", "decode_median_s", "decoder_speedup"),
    ):
        ref_text = _fmt_time(ref[key]) if ref else "-"
        ratio_text = f"{report[ratio]:.2f}x" if ref else "-"
        lines.append(f"{label:24}{ref_text:>20}{_fmt_time(ours[key]):>16}{ratio_text:>11}")
    mem_key = "peak_gpu_mb" if ours["peak_gpu_mb"] is not None else "peak_rss_mb"
    mem_label = "peak GPU memory" if mem_key == "peak_gpu_mb" else "peak RSS (process)"
    ref_mem = f"{ref[mem_key]:.0f} MB" if ref else "-"
    ratio = f"{ref[mem_key] / ours[mem_key]:.2f}x less" if ref else "-"
    lines.append(f"{mem_label:24}{ref_mem:>20}{ours[mem_key]:>13.0f} MB{ratio:>16}")
    if ref:
        verdict = "OK" if report["identical"] else "MISMATCH"
        lines.append(
            f"identity: embedding max|Δ| {report['embedding_max_abs_diff']:.2e}, logits max|Δ| "
            f"{report['logits_max_abs_diff']:.2e} (tolerance {IDENTITY_TOLERANCE:g}) {verdict}"
        )
        lines.append(f"encoder speed-up vs reference: {report['encoder_speedup']:.2f}x")
    check = report.get("precision_check")
    if check:
        lines.append(
            f"{check['precision']} encoder: {_fmt_time(check['encode_median_s'])}; vs fp32 embedding max|Δ| "
            f"{check['embedding_max_abs_diff']:.3e}, logits max|Δ| {check['logits_max_abs_diff']:.3e}, "
            f"mask Dice {check['mask_dice_vs_fp32']:.4f}"
        )
    return lines


def write_json(report: dict, path: Path) -> None:
    Path(path).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    _kind, _state, _out, _repeats, _device, _precision = sys.argv[1:7]
    run_child(_kind, _state, _out, int(_repeats), _device, _precision)

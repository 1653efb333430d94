"""Click-to-mask benchmark: InteractiveSession against the official-style pipeline, same random weights.

Volume: a synthetic 512 x 512 x 300 int16 CT-like volume (0.7 x 0.7 x 1 mm). Ours: ROI-only interpolation,
cached embedding, decoder-only refinement, paste within the ROI. Official style: torchio whole-volume
``Resample(1.5)`` + ``ToCanonical`` + ``CropOrPad`` (on a label around the click) + ``ZNormalization``,
the ``medim`` reference network, nearest-neighbour paste of the whole resampled volume; every click
re-runs it all, as ``utils/infer_utils.py`` does. Each side runs in its own child process so that its
peak RSS is its own. ``torchio`` and ``medim`` are test-only and imported lazily, in the child only.
"""

import json
import os
import statistics
import sys
import tempfile
from typing import Dict, List, Optional

import numpy as np
import SimpleITK as sitk
import torch

from ..coordinates import ras_to_lps
from ..errors import SAMMed3DError
from ..metrics import dice
from ..modeling import decode_step
from .lesion import LesionShaped
from .network import load_network, peak_rss_mb, run_in_child, seconds

SIZE = (512, 512, 300)
"""Volume size (x, y, z)."""
SPACING = (0.7, 0.7, 1.0)
LESION_RAS = (-170.0, -200.0, 150.0)
"""The clicked structure's centre, RAS mm (a 25 mm sphere)."""
REFINE_RAS = (-180.0, -195.0, 160.0)


def synthetic_volume(seed: int = 0) -> sitk.Image:
    """CT-like int16 volume: air, an elliptic body (40 HU) with a 25 mm lesion (120 HU), noise ±20 HU.

    Built slice by slice in int16 so the generator itself stays near the volume's own 150 MB.
    """
    nx, ny, nz = SIZE
    x = (np.arange(nx) - nx / 2)[None, :] / (nx * 0.45)
    y = (np.arange(ny) - ny / 2)[:, None] / (ny * 0.35)
    body = np.where(x**2 + y**2 <= 1, 40, -1000).astype(np.int16)
    rng = np.random.default_rng(seed)
    values = np.empty((nz, ny, nx), np.int16)
    centre = ras_to_lps(LESION_RAS) / np.asarray(SPACING)
    yy, xx = np.mgrid[0:ny, 0:nx]
    for z in range(nz):
        values[z] = body + rng.integers(-20, 21, (ny, nx), dtype=np.int16)
        r2 = ((xx - centre[0]) * SPACING[0]) ** 2 + ((yy - centre[1]) * SPACING[1]) ** 2
        r2 = r2 + ((z - centre[2]) * SPACING[2]) ** 2
        values[z][r2 <= 25.0**2] += 80
    image = sitk.GetImageFromArray(values)
    image.SetSpacing(SPACING)
    return image



def run_ours(
    state_path: str, device: str, precision: str = "fp32", mask_path: Optional[str] = None
) -> Dict[str, object]:
    """First click (session creation + click), refinement clicks, new-ROI click, peak RSS; the last
    refinement's mask saved (bit-packed) to ``mask_path`` when given."""
    from ..model import load_model
    from ..regions import read_region
    from ..session import InteractiveSession, StepResult

    image = synthetic_volume()
    # As the CLI and Slicer load it (a GPU is warmed up here).
    model = load_model(state_path, device=device, precision=precision)
    holder: Dict[str, InteractiveSession] = {}

    def use(result: StepResult) -> Dict[str, float]:
        """Read the voxels of the region the step changed and let the result go, as the Slicer module does (it
        copies that region into the segment; a snapshot still held when the next click writes costs one copy
        of the volume, ~40 ms here); its timings."""
        if result.changed is not None:
            read_region(result.mask, result.changed).sum()
        return dict(result.timings)

    def first() -> None:
        holder["s"] = InteractiveSession(model, image)
        breakdowns.append(use(holder["s"].add_click(LESION_RAS)))

    breakdowns: List[Dict[str, float]] = []
    first_s = seconds(first)
    session = holder["s"]
    first_breakdown = breakdowns[0]
    refine = [use(session.add_click(REFINE_RAS, positive=i % 2 == 0)) for i in range(5)]
    mask = session.mask  # held: a view of a temporary image would outlive its pixels
    mask_voxels = int(sitk.GetArrayViewFromImage(mask).sum())
    if mask_path:
        np.save(mask_path, np.packbits(sitk.GetArrayViewFromImage(mask)))
    lesion = InteractiveSession(LesionShaped(model), image)
    lesion.add_click(LESION_RAS)
    lesion_refine = [use(lesion.add_click(REFINE_RAS, positive=i % 2 == 0)) for i in range(5)]
    rss = peak_rss_mb()  # before the paste comparison below, whose SimpleITK side needs more memory
    paste_methods = compare_paste_methods(image, session.roi)
    return {
        "first_click_s": first_s,
        "first_click_breakdown": first_breakdown,
        "refine_s": [r["total"] for r in refine],
        "refine_breakdown": refine[-1],
        "lesion_refine_s": [r["total"] for r in lesion_refine],
        "lesion_refine_breakdown": lesion_refine[-1],
        "peak_rss_mb": rss,
        "paste_methods": paste_methods,
        "mask_voxels": mask_voxels,
        "threads": torch.get_num_threads(),
        "precision": precision,
    }


def compare_paste_methods(image: sitk.Image, roi, repeats: int = 3) -> Dict[str, float]:
    """Median seconds of one ragged-mask paste over the whole ROI: the separable interpolation against
    SimpleITK's resampler (the earlier method, :mod:`.sitk_reference`), same ROI, same logits."""
    from ..paste import paste_logits, upsample
    from .sitk_reference import paste_logits as sitk_paste_logits

    generator = torch.Generator().manual_seed(0)
    logits = [torch.randn(1, 1, 32, 32, 32, generator=generator) for _ in range(2)]
    mask = sitk.Image(image.GetSize(), sitk.sitkUInt8)
    mask.CopyInformation(image)
    separable = [seconds(lambda i=i: paste_logits(mask, roi, logits[i % 2])) for i in range(repeats)]
    upsampled = [upsample(low) for low in logits]
    resampler = [seconds(lambda i=i: sitk_paste_logits(mask, roi, upsampled[i % 2])) for i in range(repeats)]
    return {"separable_s": statistics.median(separable), "simpleitk_s": statistics.median(resampler)}


def run_official(state_path: str, device: str) -> Dict[str, object]:
    """The same clicks through the official-style whole-volume pipeline (torchio + medim)."""
    try:
        import torchio as tio
    except ImportError as exc:
        raise SAMMed3DError(f"the official-style pipeline needs the test-only torchio and medim ({exc})") from exc
    from torch.nn import functional as F

    image = synthetic_volume()
    model = load_network("reference", state_path, torch.device(device), "fp32")
    previous: List[Optional[torch.Tensor]] = [None]
    clicks: List[torch.Tensor] = []

    def one_click(point_ras, positive: bool) -> np.ndarray:
        with torch.inference_mode():
            subject = tio.Subject(image=tio.ScalarImage.from_sitk(image), label=_click_label(tio, image, point_ras))
            original_shape = subject.image.shape[1:]
            subject = tio.ToCanonical()(tio.Resample(1.5)(subject))
            resampled_shape = subject.image.shape[1:]
            crop = tio.CropOrPad(128, mask_name="label")
            padding, cropping = _crop_or_pad_bounds(crop, subject)
            subject = tio.ZNormalization(masking_method=lambda x: x > 0)(crop(subject))
            roi = subject.image.data[None].float().to(device)
            embedding = model.image_encoder(roi)
            clicks.append(torch.argwhere(subject.label.data[0])[:1].float())
            coords = torch.stack(clicks, 1).to(device)
            labels = torch.tensor([[1] * (len(clicks) - 1) + [int(positive)]], device=device)
            mask_in = previous[0] if previous[0] is not None else torch.zeros(1, 1, 32, 32, 32, device=device)
            low, _ = decode_step(model, embedding, coords, labels, mask_in)
            previous[0] = low
            binary = (torch.sigmoid(F.interpolate(low, size=(128,) * 3, mode="trilinear")) > 0.5)[0, 0].cpu()
            full = torch.zeros(tuple(resampled_shape))
            c, p = cropping or (0,) * 6, padding or (0,) * 6
            part = binary[p[0] : 128 - p[1], p[2] : 128 - p[3], p[4] : 128 - p[5]].float()
            full[c[0] : c[0] + part.shape[0], c[2] : c[2] + part.shape[1], c[4] : c[4] + part.shape[2]] = part
            return F.interpolate(full[None, None], size=tuple(original_shape), mode="nearest")[0, 0].numpy()

    first_s = seconds(lambda: one_click(LESION_RAS, True))
    refine = [seconds(lambda i=i: one_click(REFINE_RAS, i % 2 == 0)) for i in range(2)]
    return {"first_click_s": first_s, "refine_s": refine, "peak_rss_mb": peak_rss_mb()}


def _crop_or_pad_bounds(crop, subject):
    """(padding, cropping) of ``CropOrPad``: public in the torchio the official code used, private since."""
    if hasattr(crop, "compute_crop_or_pad"):
        return crop.compute_crop_or_pad(subject)
    return crop._compute_crop_or_pad(subject, (128, 128, 128))


def _click_label(tio, image: sitk.Image, point_ras) -> "object":
    """A whole-volume label map with a 5 mm ball at the click (the official crop centres on a label)."""
    lps = ras_to_lps(point_ras)
    index = np.round(np.asarray(image.TransformPhysicalPointToContinuousIndex(lps.tolist()))).astype(int)
    label = np.zeros(image.GetSize(), np.uint8)  # x, y, z as torchio's tensor
    r = np.ceil(2.5 / np.asarray(image.GetSpacing())).astype(int)
    label[tuple(slice(i - k, i + k + 1) for i, k in zip(index, r))] = 1
    from torchio.data.io import get_ras_affine_from_sitk

    return tio.LabelMap(tensor=torch.from_numpy(label)[None], affine=get_ras_affine_from_sitk(image))


def figures_file(workdir: str, kind: str, precision: str = "fp32") -> str:
    """Where the child running ``kind`` in ``precision`` writes its figures (JSON)."""
    return os.path.join(workdir, f"{kind}-{precision}.json")


def mask_file(figures_path: str) -> str:
    """Where ours writes its final mask (bit-packed, ``.npy``) beside its figures."""
    return figures_path[: -len(".json")] + "-mask.npy"


def spawn(
    kind: str, state_path: str, device: str, workdir: str, threads: Optional[int], precision: str = "fp32"
) -> Dict[str, object]:
    """Run one side in a child process and return its figures (ours also leaves its mask in :func:`mask_file`)."""
    out = figures_file(workdir, kind, precision)
    run_in_child(__name__, [kind, state_path, device, out, precision], kind, threads)
    with open(out, encoding="utf-8") as handle:
        return json.load(handle)


def run_session_benchmark(
    device: str = "cpu",
    threads: Optional[int] = None,
    reference: bool = True,
    say=print,
    precision: Optional[str] = None,
) -> Dict[str, object]:
    """Both sides on the same random full-size weights; prints the figures and returns them. ``precision``
    (bf16/fp16): also run ours with the encoder in it, reporting its times and its final mask's Dice
    against fp32's."""
    from .machine import describe, machine
    from .network import random_weights

    report: Dict[str, object] = {"machine": machine()}
    with tempfile.TemporaryDirectory() as workdir:
        state_path = os.path.join(workdir, "weights.pt")
        torch.save(random_weights(), state_path)
        say(f"synthetic volume {SIZE[0]}x{SIZE[1]}x{SIZE[2]} int16, random full-size weights, device {device}")
        say(describe(report["machine"]))
        report["ours"] = spawn("ours", state_path, device, workdir, threads)
        if precision and precision != "fp32":
            lower = spawn("ours", state_path, device, workdir, threads, precision)
            files = [mask_file(figures_file(workdir, "ours", p)) for p in ("fp32", precision)]
            masks = [np.unpackbits(np.load(f)) for f in files]
            lower["mask_dice_vs_fp32"] = dice(masks[1], masks[0])
            report["ours_" + precision] = lower
        report["official"] = None
        if reference:
            try:
                report["official"] = spawn("official", state_path, device, workdir, threads)
            except SAMMed3DError as exc:
                say(f"official-style pipeline skipped: {exc}")
    for line in format_report(report):
        say(line)
    return report


def format_report(report: Dict[str, object]) -> List[str]:
    ours, official = report["ours"], report["official"]
    refine = statistics.median(ours["refine_s"])
    lines = [f"{'':28}{'official-style':>16}{'SAMMed3DLib':>14}{'ratio':>9}"]
    rows = [
        ("first click (end to end)", ours["first_click_s"], official and official["first_click_s"]),
        ("refinement click (median)", refine, official and statistics.median(official["refine_s"])),
    ]
    for name, mine, theirs in rows:
        ratio = f"{theirs / mine:8.1f}x" if theirs else ""
        theirs_text = f"{theirs:15.3f}s" if theirs else f"{'-':>16}"
        lines.append(f"{name:28}{theirs_text}{mine:13.3f}s{ratio}")
    theirs_rss = f"{official['peak_rss_mb']:13.0f}MB" if official else f"{'-':>15}"
    lines.append(f"{'peak RSS':28}{theirs_rss}{ours['peak_rss_mb']:11.0f}MB")
    lesion = statistics.median(ours["lesion_refine_s"])
    lines.append(f"{'refinement, 50 mm object':28}{'-':>16}{lesion:13.3f}s  (random weights give a ragged mask)")
    methods = ours.get("paste_methods")
    if methods:
        ratio = methods["simpleitk_s"] / methods["separable_s"]
        lines.append(
            f"paste of a ragged mask over the whole ROI: separable {methods['separable_s'] * 1000:.0f} ms, "
            f"SimpleITK resampler {methods['simpleitk_s'] * 1000:.0f} ms ({ratio:.1f}x)"
        )
    setup = ours["first_click_s"] - ours["first_click_breakdown"]["total"]
    first = _breakdown(ours["first_click_breakdown"])
    lines.append(f"ours, first click: session set-up {setup * 1000:.0f} ms, {first}")
    lines.append("ours, refinement:  " + _breakdown(ours["refine_breakdown"]))
    lines.append("ours, refinement of a 50 mm object: " + _breakdown(ours["lesion_refine_breakdown"]))
    for key, lower in report.items():
        if key.startswith("ours_") and lower:
            lines += _precision_lines(key[len("ours_"):], lower)
    return lines


def _precision_lines(precision: str, figures: Dict[str, object]) -> List[str]:
    """The run with the encoder in ``precision``: its click times and mask agreement with fp32."""
    setup = figures["first_click_s"] - figures["first_click_breakdown"]["total"]
    refine, lesion = (statistics.median(figures[key]) for key in ("refine_s", "lesion_refine_s"))
    return [
        f"ours with a {precision} encoder: first click {figures['first_click_s']:.3f}s, refinement (median) "
        f"{refine:.3f}s, 50 mm object {lesion:.3f}s, "
        f"peak RSS {figures['peak_rss_mb']:.0f}MB; final mask Dice vs fp32 {figures['mask_dice_vs_fp32']:.4f}",
        f"  first click: session set-up {setup * 1000:.0f} ms, {_breakdown(figures['first_click_breakdown'])}",
    ]


def _breakdown(timings: Dict[str, float]) -> str:
    return ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in timings.items())


if __name__ == "__main__":
    kind, state, device_name, out_path, precision_name = sys.argv[1:6]
    if kind == "ours":
        figures = run_ours(state, device_name, precision_name, mask_file(out_path))
    else:
        figures = run_official(state, device_name)
    with open(out_path, "w", encoding="utf-8") as handle:
        json.dump(figures, handle)

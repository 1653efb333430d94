"""``bench-server``: the same clicks locally and through a server; overhead per click, latency under load.

Two answers are measured: the network's (with the tiny random test weights, a ragged mask whose refinement
flips ~15 % of the ROI: the worst case for the answer's size) and a lesion-shaped one (``bench/lesion.py``: a
blob whose refinement moves its surface by a few mm, as a trained model's does).
"""

import argparse
import contextlib
from typing import Any, Dict, List

import numpy as np

from ..device import DEVICES
from ..errors import InputError
from ..wording import count

TARGET_MS = 20
"""The target for the overhead per refinement click on loopback."""
ANSWER_CHOICES = ("network", "lesion", "both")
ANSWER_TITLES = {
    "network": "the network's answer (random test weights: a ragged mask, a refinement flips ~15 % of its box)",
    "lesion": "a lesion-shaped answer (a blob whose refinement moves its surface by 3-6 mm, as a trained model's)",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--weights", required=True, help="checkpoint file or registry id (both sides use it)")
    parser.add_argument("--server", help="URL of a running server (default: start one here on 127.0.0.1)")
    parser.add_argument("--token-file", help="file holding the server's bearer token")
    parser.add_argument("--answer", choices=ANSWER_CHOICES,
                        help="which answers to measure: default both, each on a server started here; with "
                             "--server, the one that server gives (network, or lesion if started with "
                             "`serve --answer lesion`)")
    parser.add_argument("--size", default="256,256,128", help="phantom size x,y,z in 1 mm voxels")
    parser.add_argument("--clicks", type=int, default=20, help="clicks per session (the first encodes)")
    parser.add_argument("--pause", type=float, default=0.1,
                        help="seconds before each click of the local/remote comparison (default 0.1, as between a "
                             "user's clicks; 0: back to back, where on few cores one side's idle torch threads, "
                             "which spin ~10 ms, may slow the other side's click)")
    parser.add_argument("--concurrency", default="1,4,8", help="client counts for the latency runs")
    parser.add_argument("--workers", type=int, default=1, help="workers of the server started here")
    parser.add_argument("--device", default="cpu", choices=DEVICES)
    parser.add_argument("--json", metavar="OUT", help="also write the figures as JSON")


def answers_to_measure(args: argparse.Namespace) -> List[str]:
    """The answers the options ask for (InputError for both on one given server)."""
    answer = args.answer or ("network" if args.server else "both")
    if answer == "both" and args.server:
        raise InputError("--server gives one answer: say which with --answer network or --answer lesion")
    return ["network", "lesion"] if answer == "both" else [answer]


def run(args: argparse.Namespace) -> int:
    from ..bench.machine import load_average, machine
    from ..bench.server import phantom, refinement_clicks
    from ..model import load_model
    from ..server.config import read_token
    from .outputs import check_output_path, write_json_report

    size = [int(v) for v in args.size.split(",")]
    counts = [int(v) for v in args.concurrency.split(",")]
    if len(size) != 3 or min(size) < 16 or args.clicks < 2 or min(counts) < 1 or args.pause < 0:
        raise InputError("--size needs three sizes >= 16, --clicks >= 2, --concurrency positive counts, --pause >= 0")
    kinds = answers_to_measure(args)
    if args.json:
        check_output_path(args.json, "--json")  # before the run, not after it
    figures: Dict[str, Any] = {"machine": machine(), "size": size, "clicks": args.clicks, "pause_s": args.pause,
                               "answers": {}}
    image = phantom(size)
    clicks = refinement_clicks(image, args.clicks)
    model = load_model(args.weights, device=args.device)
    token = read_token(args.token_file) if args.token_file else None
    for kind in kinds:
        figures["answers"][kind] = measure(args, kind, model, image, clicks, token, counts)
    figures["load_at_end"] = load_average()
    print(report(figures))
    write_json_report(args.json, figures)
    return 0


def measure(args: argparse.Namespace, kind: str, model, image, clicks, token, counts) -> Dict[str, Any]:
    """The figures of one answer: interleaved local and remote clicks, an empty request, concurrency."""
    import SimpleITK as sitk
    import torch

    from ..bench.lesion import LesionShaped
    from ..bench.server import concurrent_latencies, empty_round_trip, interleaved, local_server, percentiles
    from ..remote import RemoteSession, ServerConnection
    from ..session import InteractiveSession

    network = LesionShaped(model) if kind == "lesion" else model
    server = contextlib.nullcontext(args.server) if args.server else local_server(
        args.weights, args.workers, torch.get_num_threads(), kind)
    with server as url:
        connection = ServerConnection(url, token)
        empty = empty_round_trip(connection)
        local, remote = InteractiveSession(network, image), RemoteSession(connection, image)
        local_times, timings = interleaved(local, remote, clicks, args.pause)
        identical = bool(np.array_equal(sitk.GetArrayViewFromImage(remote.mask),
                                        sitk.GetArrayViewFromImage(local.mask)))
        remote.close()
        load = {n: percentiles(concurrent_latencies(lambda im: RemoteSession(connection, im), image, clicks, n))
                for n in counts}
    return summary(local_times, timings, empty, identical, load)


def summary(local_times, timings, empty: float, identical: bool, load) -> Dict[str, Any]:
    """Medians over the refinement clicks (all but the first), in ms."""

    def median_ms(key: str) -> float:
        return float(np.median([t[key] for t in timings[1:]]) * 1e3)

    figures = {
        "local_refine_ms": float(np.median(local_times[1:]) * 1e3),
        "remote_refine_ms": median_ms("total"),
        "worker_engine_refine_ms": median_ms("engine"),
        "server_diff_ms": median_ms("flips"),
        "client_apply_ms": median_ms("apply"),
        "empty_request_ms": empty * 1e3,
        "flipped_kib": float(np.median([t["flipped_bytes"] for t in timings[1:]]) / 1024),
        "identical_masks": identical,
        "concurrency": load,
    }
    # two measures of one overhead: the difference of medians also holds the engine's noise between two
    # processes on a shared machine; the round trip minus the worker's engine time of the same click does not
    figures["overhead_ms"] = figures["remote_refine_ms"] - figures["local_refine_ms"]
    figures["overhead_per_click_ms"] = median_ms("transfer")
    figures["rest_ms"] = figures["overhead_per_click_ms"] - sum(
        figures[k] for k in ("empty_request_ms", "server_diff_ms", "client_apply_ms"))
    return figures


def report(f: Dict[str, Any]) -> str:
    m = f["machine"]
    lines = [
        f"machine: {m['cpu']}, {m['cores']} CPUs; load average (1, 5, 15 min) {_load(m['load_before'])} at the start, "
        f"{_load(f['load_at_end'])} at the end",
        f"volume {'x'.join(map(str, f['size']))} (1 mm), {count(f['clicks'], 'click')} per session, each side's "
        f"click after a {f['pause_s']:g} s pause;",
        "the first click encodes: the figures are medians over the others, in ms",
    ]
    for kind, figures in f["answers"].items():
        lines += ["", ANSWER_TITLES[kind], *answer_report(figures)]
    return "\n".join(lines)


def _load(values) -> str:
    return " ".join(f"{v:.2f}" for v in values) if values else "unknown"


def answer_report(f: Dict[str, Any]) -> List[str]:
    def verdict(ms: float) -> str:
        return "met" if ms <= TARGET_MS else "NOT met"

    rows = [
        ("refinement click, local", f["local_refine_ms"], ""),
        ("refinement click through the server", f["remote_refine_ms"], ""),
        ("  of which the worker's engine", f["worker_engine_refine_ms"], ""),
        (f"OVERHEAD: median through the server minus median local (target <= {TARGET_MS} ms)", f["overhead_ms"],
         verdict(f["overhead_ms"])),
        ("overhead click by click: round trip minus that click's engine time", f["overhead_per_click_ms"],
         verdict(f["overhead_per_click_ms"])),
        ("  an empty request (HTTP, Serve's proxy, the gateway)", f["empty_request_ms"], ""),
        ("  the server's mask diff", f["server_diff_ms"], ""),
        ("  the client's apply", f["client_apply_ms"], ""),
        (f"  the rest (the worker hop, the answer: a {f['flipped_kib']:.0f} KiB box of flips, bit-packed)",
         f["rest_ms"], ""),
    ]
    lines = [f"  {name:<82}{value:7.1f}  {note}".rstrip() for name, value, note in rows]
    lines.append(f"  masks identical: {f['identical_masks']}")
    lines.append("  refinement clicks of concurrent sessions (back to back), p50 / p95:")
    lines += [f"    {n:>3} at once  {v['p50_ms']:7.1f} / {v['p95_ms']:7.1f}" for n, v in f["concurrency"].items()]
    return lines

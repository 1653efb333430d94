"""``bench-server``: the same clicks locally and through a server; overhead per click, latency under load."""

import argparse
import json

import numpy as np

from ..device import DEVICES
from ..errors import InputError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--weights", required=True, help="checkpoint file or registry id (both sides use it)")
    parser.add_argument("--server", help="URL of a running server (default: start one here on 127.0.0.1)")
    parser.add_argument("--token-file", help="file holding the server's bearer token")
    parser.add_argument("--size", default="256,256,128", help="phantom size x,y,z in 1 mm voxels")
    parser.add_argument("--clicks", type=int, default=10, help="clicks per session (the first encodes)")
    parser.add_argument("--concurrency", default="1,4,8", help="client counts for the latency runs")
    parser.add_argument("--workers", type=int, default=1, help="workers of the server started here")
    parser.add_argument("--device", default="cpu", choices=DEVICES)
    parser.add_argument("--json", metavar="OUT", help="also write the figures as JSON")


def run(args: argparse.Namespace) -> int:
    import contextlib
    import time

    import SimpleITK as sitk
    import torch

    from ..bench.server import concurrent_latencies, local_server, percentiles, phantom, refinement_clicks
    from ..model import load_model
    from ..remote import RemoteSession, ServerConnection
    from ..server.config import read_token
    from ..session import InteractiveSession

    size = [int(v) for v in args.size.split(",")]
    counts = [int(v) for v in args.concurrency.split(",")]
    if len(size) != 3 or min(size) < 16 or args.clicks < 2 or min(counts) < 1:
        raise InputError("--size needs three sizes >= 16, --clicks >= 2, --concurrency positive counts")
    image = phantom(size)
    clicks = refinement_clicks(image, args.clicks)
    model = load_model(args.weights, device=args.device)
    token = read_token(args.token_file) if args.token_file else None
    server = contextlib.nullcontext(args.server) if args.server else local_server(
        args.weights, args.workers, torch.get_num_threads())
    with server as url:
        connection = ServerConnection(url, token)
        local, remote = InteractiveSession(model, image), RemoteSession(connection, image)
        local_times, remote_times, transfer = [], [], []
        for point, positive in clicks:  # interleaved: both sides see the same load on a shared machine
            start = time.perf_counter()
            local.add_click(point, positive)
            local_times.append(time.perf_counter() - start)
            result = remote.add_click(point, positive)
            remote_times.append(result.timings["total"])
            transfer.append(result.timings["transfer"])
        identical = bool(np.array_equal(sitk.GetArrayFromImage(remote.mask), sitk.GetArrayFromImage(local.mask)))
        remote.close()
        load = {n: percentiles(concurrent_latencies(lambda im: RemoteSession(connection, im), image, clicks, n))
                for n in counts}
    figures = {
        "size": size, "clicks": args.clicks,
        "local_refine_ms": float(np.median(local_times[1:]) * 1e3),
        "remote_refine_ms": float(np.median(remote_times[1:]) * 1e3),
        "transfer_refine_ms": float(np.median(transfer[1:]) * 1e3),
        "identical_masks": identical,
        "concurrency": load,
    }
    figures["overhead_ms"] = figures["remote_refine_ms"] - figures["local_refine_ms"]
    print(report(figures))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(figures, handle, indent=2)
    return 0


def report(f: dict) -> str:
    lines = [
        f"volume {'x'.join(map(str, f['size']))}, {f['clicks']} clicks per session "
        "(the first encodes; medians of the rest)",
        f"refinement click: local {f['local_refine_ms']:.1f} ms, through the server {f['remote_refine_ms']:.1f} ms",
        f"overhead {f['overhead_ms']:.1f} ms per refinement click (client-measured transfer "
        f"{f['transfer_refine_ms']:.1f} ms); masks identical: {f['identical_masks']}",
        "concurrent sessions   p50 ms   p95 ms",
    ]
    lines += [f"{n:>19}  {v['p50_ms']:7.1f}  {v['p95_ms']:7.1f}" for n, v in f["concurrency"].items()]
    return "\n".join(lines)

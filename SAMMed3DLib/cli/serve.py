"""``serve``: the engine as an HTTP service on Ray Serve (see README, "A server for a team")."""

import argparse
import dataclasses
from pathlib import Path

from ..device import PRECISIONS
from ..errors import InputError
from ..server.config import ANSWERS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--weights", required=True, help="checkpoint file or registry id (see `models`)")
    parser.add_argument("--device", default="auto", help="auto (one worker per GPU, else CPU), cuda or cpu")
    parser.add_argument("--precision", default="fp32", choices=PRECISIONS,
                        help="image encoder precision (default fp32; bf16: faster on GPUs and on CPUs with "
                             "AVX512-BF16 or AMX)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--token-file", type=Path, help="file holding the bearer token (required off loopback)")
    parser.add_argument("--address", help="join this Ray cluster (e.g. auto, or HEAD:6379) instead of a local Ray")
    parser.add_argument("--workers", type=int, help="worker count (default: one per GPU, or one on CPU)")
    parser.add_argument("--threads", type=int,
                        help="torch CPU threads per worker (default: its share of the machine's cores; CPU masks "
                             "depend on it: see README)")
    parser.add_argument("--num-cpus", type=int, default=2, help="CPUs a local Ray may use (default 2)")
    parser.add_argument("--max-upload-mb", type=float, default=1024.0, help="largest upload, MiB (default 1024)")
    parser.add_argument("--max-sessions", type=int, default=8, help="sessions per worker (default 8)")
    parser.add_argument("--idle-timeout", type=float, default=1800.0, help="seconds before an idle session is freed")
    parser.add_argument("--request-timeout", type=float, default=120.0, help="seconds a step may take")
    parser.add_argument("--answer", default="network", choices=ANSWERS,
                        help="network (default), or lesion: every mask a blob in place of the network's, only for "
                             "bench-server's realistic-answer figure, never for segmentation")


def config_from(args: argparse.Namespace):
    """The ServerConfig the options describe (the token read from its file)."""
    from ..server.config import Limits, ServerConfig, read_token

    if args.port < 0 or args.port > 65535:
        raise InputError(f"--port must be between 0 and 65535, got {args.port}")
    limits = Limits(int(args.max_upload_mb * 2**20), args.max_sessions, args.idle_timeout, args.request_timeout)
    return ServerConfig(
        weights=args.weights, device=args.device, host=args.host, port=args.port,
        token=read_token(args.token_file) if args.token_file else None, workers=args.workers,
        address=args.address, num_cpus=args.num_cpus, threads=args.threads, limits=limits, answer=args.answer,
        precision=args.precision,
    )


def run(args: argparse.Namespace) -> int:
    from ..server.config import check_config

    config = config_from(args)
    check_config(config)  # before Ray starts: a refused configuration costs nothing
    if not config.address:  # one machine: fetch or check the weights once, here, with a plain error if missing
        from ..device import resolve_device, resolve_precision

        resolve_precision(config.precision, resolve_device(config.device))  # one message before Ray starts
        from ..weights import resolve_checkpoint

        config = dataclasses.replace(config, weights=str(resolve_checkpoint(config.weights)))
    try:
        from ..server.launch import serve_forever
    except ImportError as exc:
        raise InputError(f"the server needs Ray Serve and FastAPI: pip install 'SAMMed3DLib[server]' ({exc})") from exc
    serve_forever(config, lambda url: print(f"SAM-Med3D server ready at {url}/v1 (Ctrl+C stops it)", flush=True))
    return 0

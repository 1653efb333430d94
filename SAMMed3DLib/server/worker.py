"""The Ray actor that holds the model and one :class:`~.core.WorkerCore` of sessions."""

import os
import threading
import time
from typing import Any, Dict, Optional

import ray

from .config import NAMESPACE, NORMAL_PRIORITY, Limits, ServerConfig, worker_name
from .core import Answer, WorkerCore
from .engine import EngineThread


def default_threads(share: int) -> int:
    """torch CPU threads of one of ``share`` workers on this machine: its share of the cores this process may
    use (Ray sets one thread per reserved CPU, which made a CPU server click slower than a local session)."""
    return max(1, len(os.sched_getaffinity(0)) // max(1, share))


class EngineWorker:
    """Loads the network once on ``device`` and serves sessions, their steps on one engine thread (one step at
    a time, refinements first: :mod:`.engine`; Ray runs each call of a threaded actor on whichever of its threads
    is free, and steps rotating over many threads, each with its own torch thread pool and allocator arena, ran
    20-50 % slower); a daemon thread frees idle sessions. ``threads``: torch CPU threads (None: its share of the
    cores among ``share`` workers). ``answer`` "lesion": the masks are blobs in place of the network's logits
    (benchmarks only)."""

    def __init__(self, index: int, weights: str, device: str, limits: Limits, threads: Optional[int],
                 answer: str = "network", precision: str = "fp32", share: int = 1) -> None:
        import torch

        from .. import InteractiveSession, load_model

        # CPU results depend on the thread count (the order of float sums): the README says how to pin it.
        # Set before the engine thread starts, which takes this count.
        torch.set_num_threads(threads or default_threads(share))
        model = load_model(weights, device=device, precision=precision)
        network = model
        if answer == "lesion":
            from ..bench.lesion import LesionShaped

            network = LesionShaped(model)
        self._engine = EngineThread()
        self._core = WorkerCore(
            index,
            lambda image, **options: InteractiveSession(network, image, **options),
            limits,
            {"weights": str(weights), "device": str(model.device), "precision": precision, "answer": answer,
             "threads": torch.get_num_threads()},
            run=self._engine.run,
        )
        threading.Thread(target=self._sweep_forever, daemon=True, name="idle-sweep").start()

    def _sweep_forever(self) -> None:
        period = min(30.0, max(0.2, self._core.limits.idle_timeout / 4))
        while True:
            time.sleep(period)
            self._core.sweep()

    def info(self) -> Dict[str, Any]:
        return self._core.info()

    def load(self) -> int:
        return self._core.load()

    def create(self, upload: bytes) -> Answer:
        return self._core.create(upload)

    def step(self, sid: str, op: str, args: Dict[str, Any]) -> Answer:
        return self._core.step(sid, op, args)

    def close(self, sid: str) -> Answer:
        return self._core.close(sid)


def start_worker(config: ServerConfig, index: int, device: str, gpus: float, cpus: float, share: int = 1) -> Any:
    """Worker ``index`` as a named actor: threaded (one thread per session, plus two for health and sweeps),
    restarted by Ray if its process dies (the sessions are then lost; clients replay them)."""
    actor = ray.remote(EngineWorker).options(
        name=worker_name(index), namespace=NAMESPACE, max_concurrency=config.limits.max_sessions + 2,
        max_restarts=-1, num_gpus=gpus, num_cpus=cpus, runtime_env=NORMAL_PRIORITY,
    )
    return actor.remote(
        index, config.weights, device, config.limits, config.threads, config.answer, config.precision, share
    )

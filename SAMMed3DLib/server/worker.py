"""The Ray actor that holds the model and one :class:`~.core.WorkerCore` of sessions."""

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Dict, Optional

import ray

from .config import NAMESPACE, NORMAL_PRIORITY, Limits, ServerConfig, worker_name
from .core import Answer, WorkerCore

ENGINE_THREADS = 1
"""Threads that run the steps of a worker's sessions (one after the other). Ray runs each call of a threaded actor
on whichever of its threads is free, so steps rotated over max_sessions + 2 threads, each with its own torch
thread pool and allocator arena: the engine ran 20-50 % slower than on one thread (tiny network, 256x256x128,
AMD EPYC, 2 cores), and a device runs one step at a time anyway."""


class EngineWorker:
    """Loads the network once on ``device`` and serves sessions, their steps on one engine thread; a daemon
    thread frees idle sessions. ``answer`` "lesion": the masks are blobs in place of the network's logits
    (benchmarks only)."""

    def __init__(self, index: int, weights: str, device: str, limits: Limits, threads: Optional[int],
                 answer: str = "network", precision: str = "fp32") -> None:
        import torch

        from .. import InteractiveSession, load_model

        if threads:  # CPU results depend on the thread count (reduction order): pin it when asked
            torch.set_num_threads(threads)
        model = load_model(weights, device=device, precision=precision)
        network = model
        if answer == "lesion":
            from ..bench.lesion import LesionShaped

            network = LesionShaped(model)
        engine = ThreadPoolExecutor(ENGINE_THREADS, thread_name_prefix="engine")
        self._core = WorkerCore(
            index,
            lambda image, **options: InteractiveSession(network, image, **options),
            limits,
            {"weights": str(weights), "device": str(model.device), "precision": precision, "answer": answer},
            run=lambda work: _on(engine, work),
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


def _on(engine: ThreadPoolExecutor, work: Callable[[], Answer]) -> Answer:
    """``work``'s answer, run on the engine thread (the calling Ray thread waits)."""
    return engine.submit(work).result()


def start_worker(config: ServerConfig, index: int, device: str, gpus: float, cpus: float) -> Any:
    """Worker ``index`` as a named actor: threaded (one thread per session, plus two for health and sweeps),
    restarted by Ray if its process dies (the sessions are then lost; clients replay them)."""
    actor = ray.remote(EngineWorker).options(
        name=worker_name(index), namespace=NAMESPACE, max_concurrency=config.limits.max_sessions + 2,
        max_restarts=-1, num_gpus=gpus, num_cpus=cpus, runtime_env=NORMAL_PRIORITY,
    )
    return actor.remote(
        index, config.weights, device, config.limits, config.threads, config.answer, config.precision
    )

"""The Slicer module's models: user options, which weights file a click may use, loading and caching networks.

A click never reaches the network: a registry model must already be in the cache (the panel's Download
button fetches it, with progress and cancel: :class:`Progress`), and a cached file that fails verification is
reported, not fetched again. torch loads only on the worker (:meth:`ModelStore.job`'s and
:meth:`ModelStore.preload_job`'s loaders) and in :func:`device_note`, which the panel asks only once torch is
imported (:meth:`ModelStore.note`): the main thread never waits for ``import torch``.
"""

import gc
import importlib.util
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

from ..device import DEVICES as ENGINE_DEVICES
from ..errors import InputError
from .remote_models import SERVER, ServerStore, is_server

DEFAULT_MODEL = "sam-med3d-turbo"
DEVICES = dict(zip(ENGINE_DEVICES, ("auto", "CUDA", "MPS (Apple)", "CPU")))
"""The local devices (the engine's list), value → label: device menu, notes."""
DEVICE_CHOICES = {**DEVICES, SERVER: "Server"}
"""What the panel offers (parameter node choice, device menu): the local devices, then a SAM-Med3D server."""


@dataclass(frozen=True)
class ModuleOptions:
    """The module's user choices. ``model``: registry id or checkpoint path; ``device``: one of
    :data:`DEVICE_CHOICES`; ``precision``: one of the engine's ``PRECISIONS``."""

    model: str = DEFAULT_MODEL
    device: str = "auto"
    precision: str = "fp32"  # of the image encoder: "bf16" is faster on GPUs and CPUs with bf16 instructions
    auto_extend: bool = False
    start_from_existing: bool = False
    protect_others: bool = True
    harden_transforms: bool = False
    registry: Optional[str] = None  # model_weights.json path; None = the default one
    cache_dir: Optional[str] = None  # checkpoint cache; None = the default one
    server_url: str = ""  # device "server": e.g. http://gpu-host:8000 (the panel keeps it in Slicer's settings)
    server_token: str = ""  # device "server": the server's bearer token


def _is_local(spec: str) -> bool:
    return spec.startswith("file:") or Path(spec).is_file()


def _registry_entry(options: ModuleOptions):
    """The registry entry of ``options.model``, or one ``InputError`` naming what is wrong."""
    from ..weights import load_registry

    entry = load_registry(options.registry).get(options.model)
    if entry is None:
        if any(c in options.model for c in "/\\") or options.model.endswith((".pth", ".pt")):
            raise InputError(f"Checkpoint file not found: {options.model}")
        raise InputError(f"Unknown model '{options.model}'. Choose one from the list or a local checkpoint.")
    return entry


def _cache_slot(options: ModuleOptions) -> Tuple[Path, str, Optional[str], Optional[int]]:
    """Where Download puts ``options.model`` (a registry id or an http(s) URL): (path, display name,
    expected SHA-256, expected size in bytes)."""
    from .. import weights

    if not options.model.startswith(("http:", "https:")):
        _registry_entry(options)  # the panel's own words for an unknown id or a missing file
    slot = weights.locate(options.model, registry=options.registry, cache_dir=options.cache_dir)
    return slot.path, slot.name, slot.sha256, slot.size


def _not_downloaded(name: str) -> InputError:
    return InputError(f"The model '{name}' is not downloaded yet: press Download first.")


def _usable_status(options: ModuleOptions, deep: bool):
    """The weights' cache status (``weights.cache_status``), or one ``InputError`` offering Download."""
    from .. import weights

    _cache_slot(options)
    status = weights.cache_status(options.model, registry=options.registry, cache_dir=options.cache_dir, deep=deep)
    if status.state == "damaged":
        message = f"The downloaded model '{status.name}' is damaged ({status.problem})"
        raise InputError(f"{message}: press Download to fetch it again.")
    if not status.usable:
        raise _not_downloaded(status.name)
    return status


def check_weights_present(options: ModuleOptions) -> None:
    """Main thread, cheap (size and structure, no hashing): the weights a click would use exist locally and
    are not visibly damaged (a registry model: in the cache)."""
    if _is_local(options.model):
        return
    _usable_status(options, deep=False)


def local_checkpoint(options: ModuleOptions) -> str:
    """Worker thread: the verified local weights file for a click. Never uses the network and never deletes:
    a missing or corrupted cached file is one ``InputError`` that offers Download."""
    from ..weights import resolve_checkpoint

    if _is_local(options.model):
        return str(resolve_checkpoint(options.model, download=False))  # a local file: checked, never copied
    return str(_usable_status(options, deep=True).path)


@dataclass
class Progress:
    """Download progress shared between the worker thread (writes) and the GUI (reads); ``cancel()`` stops it.
    ``done`` and ``total`` in bytes (``total`` None: unknown), ``bytes_per_second`` the current rate."""

    done: int = 0
    total: Optional[int] = None
    bytes_per_second: float = 0.0
    cancelled: threading.Event = field(default_factory=threading.Event)

    def update(self, done: int, total: Optional[int], bytes_per_second: float) -> bool:
        """Progress callback for :func:`SAMMed3DLib.weights.resolve_checkpoint`; False asks it to stop."""
        self.done, self.total, self.bytes_per_second = done, total, bytes_per_second
        return not self.cancelled.is_set()

    def cancel(self) -> None:
        self.cancelled.set()

    @property
    def fraction(self) -> Optional[float]:
        """Bytes done / total (0..1), None while the total is unknown."""
        return self.done / self.total if self.total else None


def download_checkpoint(options: ModuleOptions, progress: Optional[Progress]) -> str:
    """Worker thread (Download button): fetch ``options.model`` into the cache, verified; cancel via ``progress``."""
    from ..weights import resolve_checkpoint

    callback = progress.update if progress is not None else None
    return str(
        resolve_checkpoint(options.model, registry=options.registry, cache_dir=options.cache_dir, progress=callback)
    )


NO_TORCH_NOTE = "PyTorch is not installed yet (it is installed on first use)."
NO_TORCH_YET = "PyTorch is not installed yet: the first click offers to install it."


def torch_imported() -> bool:
    """Whether ``import torch`` has completed in this process (a module still being imported by another thread
    is in ``sys.modules`` already; asking it for devices would wait for that import)."""
    torch = sys.modules.get("torch")
    return torch is not None and not getattr(getattr(torch, "__spec__", None), "_initializing", False)


def torch_installed() -> bool:
    return torch_imported() or importlib.util.find_spec("torch") is not None


def _note_for(requested: str, actual: str) -> str:
    """The device note for a model that runs on ``actual`` ('cuda' / 'mps' / 'cpu') though ``requested``."""
    if requested not in ("auto", "cpu") and actual == "cpu":
        return f"{DEVICES.get(requested, requested)} is not available here; running on the CPU (much slower)."
    return "running on the CPU (much slower than a GPU)" if actual == "cpu" else f"running on {DEVICES[actual]}"


def device_note(requested: str) -> str:
    """What the panel shows about the device: 'running on CUDA' / a CPU warning, a fallback warning when the
    requested device is absent, or :data:`NO_TORCH_NOTE` before PyTorch is installed."""
    from ..device import resolve_device

    try:
        actual = resolve_device(requested).type
    except ImportError:  # torch itself is missing
        return NO_TORCH_NOTE
    return _note_for(requested, actual)


def free_device_memory() -> None:
    """Worker thread, after a CUDA model was released: hand its cached blocks back to the driver, so that the
    memory shows as free to other programs (PyTorch keeps freed blocks for reuse otherwise)."""
    import torch

    gc.collect()  # a reference cycle may still hold a tensor
    torch.cuda.empty_cache()


ModelKey = Tuple[str, str, str]  # (model, device, precision)


def model_key(options: ModuleOptions) -> ModelKey:
    return options.model, options.device, options.precision


class ModelStore:
    """The one network in use, by (model, device, precision), loaded on the worker; ``loader(path, device=...,
    precision=...)`` builds one. With the Server device, the "network" is a server connection
    (:mod:`.remote_models`).

    The store keeps one network: the one for the options the main thread asked for last (a click's
    :meth:`job`, :meth:`preload_job`, :meth:`keep_only`, :meth:`put`). Loading another, or :meth:`keep_only`,
    drops the one before, and a load that finishes after the main thread moved on is not kept: its memory goes
    as soon as nothing else holds it (the controller's sessions and embedding caches are its to drop)."""

    def __init__(self, loader: Optional[Callable] = None) -> None:
        self._loader = loader
        self._models: Dict[ModelKey, Tuple[Any, str]] = {}
        self._wanted: Optional[ModelKey] = None  # the key the main thread asked for last; None: none
        self._lock = threading.Lock()  # the worker's check-and-keep against the main thread's keep_only
        self.servers = ServerStore()

    def put(self, options: ModuleOptions, model: Any, device_type: str = "cpu") -> None:
        """Use an already-built model for the options' (model, device, precision)."""
        with self._lock:
            self._wanted = model_key(options)
            self._models = {self._wanted: (model, device_type)}

    def device_type(self, options: ModuleOptions) -> str:
        """'cpu' / 'cuda' / 'mps' the loaded model runs on ('cpu' before it is loaded), or 'server'."""
        if is_server(options):
            return SERVER
        return self._models.get(model_key(options), (None, "cpu"))[1]

    def loaded(self, options: ModuleOptions) -> bool:
        """Whether the network of ``options`` is loaded (never for the Server device)."""
        return not is_server(options) and model_key(options) in self._models

    def note(self, options: ModuleOptions) -> str:
        """What the panel shows about the options' device (:func:`device_note`), or about their server. Before
        torch is imported (the worker imports it when it loads the model) only what is known without it: ""
        (torch installed) or :data:`NO_TORCH_NOTE`, so the panel never waits for the import."""
        if is_server(options):
            return self.servers.note(options)
        loaded = self._models.get(model_key(options))
        if loaded is not None:
            return _note_for(options.device, loaded[1])
        if not torch_imported():
            return "" if torch_installed() else NO_TORCH_NOTE
        return device_note(options.device)

    def clear(self) -> None:
        with self._lock:
            self._models.clear()
        self.servers.clear()

    def keep_only(self, options: Optional[ModuleOptions]) -> List[str]:
        """Main thread: drop every network but the one of ``options`` (None, or the Server device: all of them);
        a load of another still under way will not be kept. The device types of the networks dropped."""
        wanted = None if options is None or is_server(options) else model_key(options)
        with self._lock:
            self._wanted = wanted
            dropped = [device for key, (_, device) in self._models.items() if key != wanted]
            self._models = {key: value for key, value in self._models.items() if key == wanted}
        return dropped

    def preload_problem(self, options: ModuleOptions) -> Optional[str]:
        """Main thread, cheap: why the network of ``options`` cannot be loaded ahead of a click (no PyTorch yet,
        no model chosen, weights not downloaded or visibly damaged), or None. Asks nothing and installs nothing."""
        if not torch_installed():
            return NO_TORCH_YET
        try:
            if not options.model:
                raise InputError("Choose a model (or a local checkpoint) first.")
            check_weights_present(options)
        except Exception as exc:  # noqa: BLE001 - a reason for the status line; the click reports it again
            return str(exc) if isinstance(exc, InputError) else f"{type(exc).__name__}: {exc}"
        return None

    def preload_job(self, options: ModuleOptions) -> Callable[[], Optional[float]]:
        """Main thread: a function for the worker that loads the network of ``options`` ahead of the first click
        (asked for with :meth:`keep_only`) and returns the seconds it took; None when there was nothing to do
        (loaded meanwhile, or the main thread asked for another network since)."""
        key = model_key(options)

        def preload() -> Optional[float]:
            if key != self._wanted or key in self._models:
                return None
            start = time.perf_counter()
            self._load(key, options)
            return time.perf_counter() - start

        return preload

    def warm_job(self, options: ModuleOptions) -> Callable[[], None]:
        """Main thread: a function for the worker that runs the loaded network of ``options`` once on a blank crop
        (:func:`~SAMMed3DLib.model.warm_up`), so that the first click does not pay the first run's set-up (on a
        CPU: thread pools, kernels chosen for these shapes, the first large allocations)."""
        key = model_key(options)

        def warm() -> None:
            from ..model import warm_up

            loaded = self._models.get(key)
            if loaded is not None and key == self._wanted:
                warm_up(loaded[0])

        return warm

    def job(self, options: ModuleOptions) -> Tuple[Callable[[], Any], Optional[str]]:
        """Main thread: a function for the worker returning the (cached) model, and a device warning (or None).
        Raises ``InputError`` when there is no model or its weights are not downloaded (or no server URL)."""
        if is_server(options):
            return self.servers.job(options), None  # the server has its own weights; no torch here
        key = model_key(options)
        if not options.model:
            raise InputError("Choose a model (or a local checkpoint) first.")
        self._wanted = key
        if key in self._models:
            model = self._models[key][0]
            return (lambda: model), None
        check_weights_present(options)
        note = device_note(options.device)
        return (lambda: self._load(key, options)), (note if "not available" in note else None)

    def _load(self, key: ModelKey, options: ModuleOptions) -> Any:
        """Worker thread: verified local weights → network on the resolved device in the chosen precision; kept
        for later clicks, in place of the one before, unless the main thread asked for another meanwhile (a
        precision this device lacks is one InputError)."""
        from ..device import resolve_device
        from ..model import load_model

        device = resolve_device(options.device)
        model = (self._loader or load_model)(local_checkpoint(options), device=device, precision=options.precision)
        with self._lock:
            if key == self._wanted:
                self._models = {key: (model, device.type)}
        return model

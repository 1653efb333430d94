"""The controller's model side, mixed into :class:`~.controller.SegmentationController` (as :class:`.feedback.Reporter`
is): the Download and Test connection buttons, the device note, and the network loaded before the first click.

As soon as the module knows which network the next click will use (a volume is selected; a local checkpoint or a
downloaded registry model; a local device), it queues a :class:`~.actions.Preload`: the worker thread imports
torch and loads the network while the user looks for the structure to click, and a click made meanwhile waits in
the queue behind that load, which it then uses (one load). Changing model, device or precision releases the
network in use (the store keeps one; the sessions and embedding caches that hold it are dropped) and loads the
new one the same way; *Unload model* releases it and loads nothing ahead of clicks until the next click or model
choice. Leaving the module or closing the scene keeps it: the network belongs to no scene, and the next case's
first click would pay the load again. A preload never asks anything and opens no dialog: what stops it is one
reason in the status line, and the click reports it as it always did.
"""

from functools import partial
from typing import Any, Callable, Optional

from .actions import Click, ConnectionTest, Download, Preload, Show
from .feedback import LOADING_MODEL, MODEL_UNLOADED, error_text, model_not_loaded_status, model_ready_status
from .models import ModelKey, ModuleOptions, Progress, download_checkpoint, free_device_memory, model_key
from .remote_models import is_server
from .targets import Inputs


def _nothing() -> None:
    """A skipped step's job."""


class ModelLoading:
    """What the panel does about models and devices (see the module docstring); state of the preload."""

    def __init__(self) -> None:
        self._preload_held = False  # Unload model: nothing loads ahead of clicks until a click or a new choice
        self._preload_failed: Optional[ModelKey] = None  # its preload failed: not again until a new choice/download

    # --- what the GUI calls ---------------------------------------------------------------------------------

    @property
    def uses_server(self) -> bool:
        """The Server device is chosen: clicks run on a SAM-Med3D server, PyTorch is not needed here."""
        return is_server(self.options)

    @property
    def model_loaded(self) -> bool:
        """The local network of the current options is loaded (the Unload model button)."""
        return self.models.loaded(self.options)

    def device_note(self) -> str:
        """What the panel shows about the device (see :meth:`.models.ModelStore.note`), or about the server."""
        return self.models.note(self.options)

    def download(self, progress: Optional[Progress] = None) -> Progress:
        """Fetch the selected registry model into the cache on the worker; cancel with ``progress.cancel()``."""
        progress = progress or Progress()
        self.download_progress = progress
        self.run_errand(partial(download_checkpoint, self.options, progress), Download(progress))
        return progress

    def test_connection(self) -> None:
        """Ask the server of the options for its version and workers (on the worker); one line in the panel."""
        self.run_errand(self.models.servers.test_job(self.options), ConnectionTest(self.options.server_url.strip()))

    def unload_model(self) -> None:
        """Free the memory of the local network (Unload model). Sessions in progress end; their segments stay as
        they are, and the next click continues from them in a new session, loading the network again."""
        self._preload_held = True
        if len(self._targets):
            self._close(self._targets.continue_all())
            self._queue(Show)
        self._release_models(None)
        self.status = MODEL_UNLOADED

    # --- the preload (main thread) --------------------------------------------------------------------------

    def _preload(self) -> None:
        """Queue the load of the network the next click will use, unless no volume is selected, the Server device
        is chosen, Unload model holds it, it is loaded or queued, or its preload failed; a reason it cannot be
        loaded (no PyTorch yet, weights not downloaded) goes to the status line, quietly."""
        options = self.options
        if self.inputs.volume is None or self.uses_server or self._preload_held or self.models.loaded(options):
            return
        if model_key(options) == self._preload_failed or self._preload_queued(model_key(options)):
            return
        problem = self.models.preload_problem(options)
        if problem is not None:
            self.status = model_not_loaded_status(problem)
            return
        self.models.keep_only(options)
        self.status = LOADING_MODEL
        loose = Inputs()  # the load belongs to no scene: a scene closing meanwhile does not drop it
        self._actions.extend((Preload(loose, options), Preload(loose, options, warm=True)))
        self._start_next()

    def _preload_job(self, action: Preload) -> Callable[[], Any]:
        """The worker's job for ``action``: the load, or the warm-up run unless a click already waits for the
        worker (it would wait for the warm-up too, and its own first run does the same set-up)."""
        if not action.warm:
            return self.models.preload_job(action.options)
        waiting = any(isinstance(queued, Click) for queued in self._actions)
        return _nothing if waiting else self.models.warm_job(action.options)

    def _preload_queued(self, key: ModelKey) -> bool:
        actions = [*(work.action for work in self._pending), *self._actions]
        return any(isinstance(action, Preload) and model_key(action.options) == key for action in actions)

    def _preloaded(self, action: Preload, outcome: Any) -> None:
        """A preload's job ended with ``outcome``: the seconds it took, None (nothing to load any more) or the
        exception it raised. The status line says so, unless the user chose another network meanwhile."""
        key = model_key(action.options)
        if key != model_key(self.options) or action.warm:
            return
        if isinstance(outcome, BaseException):
            self._preload_failed = key
            self.status = model_not_loaded_status(error_text(outcome))
        elif outcome is not None:
            self.status = model_ready_status(outcome, self.models.device_type(self.options))
            note = self.device_note()
            if "not available" in note:  # the device asked for is absent: said once, as a click's load says it
                self._report(note, False)

    def _retry_preload(self) -> None:
        """A download ended: the weights a failed preload lacked may be there now."""
        self._preload_failed = None
        self._preload()

    def _model_choice_changed(self, old: ModuleOptions) -> None:
        """``set_options`` changed the options from ``old``: a new model, device or precision releases the network
        in use (set_options already ended the sessions that hold it) and loads the new one ahead of clicks."""
        if model_key(old) == model_key(self.options):
            return
        self._preload_held, self._preload_failed = False, None
        if self._release_models(self.options):
            self.status = MODEL_UNLOADED
        self._preload()

    def _release_models(self, keep: Optional[ModuleOptions]) -> bool:
        """Drop every network but that of ``keep`` and the embedding caches that hold one; a CUDA network's cached
        memory is handed back on the worker, after the job that may still use it. Whether one was dropped."""
        dropped = self.models.keep_only(keep)
        self._volumes.drop_embeddings()
        if "cuda" in dropped:
            self.run_errand(free_device_memory)
        return bool(dropped)

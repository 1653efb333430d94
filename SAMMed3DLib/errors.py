"""Errors the engine raises for bad input; each carries one message meant for the user."""


class SAMMed3DError(Exception):
    """Base class: the message is complete and can be shown as is."""


class CheckpointError(SAMMed3DError):
    """A weights file that is missing, not a checkpoint, truncated or of another architecture."""


class DownloadError(SAMMed3DError):
    """A download that failed, timed out, was cancelled or did not match its size or checksum."""


class RegistryError(SAMMed3DError):
    """A model registry (model_weights.json) that is unreadable or has an invalid entry."""


class InputError(SAMMed3DError):
    """An image, click, mask or markups file the engine cannot use."""


class SessionBusyError(InputError):
    """A session step called while another step of the same session runs (from another thread)."""


class NetworkOutputError(SAMMed3DError):
    """The network returned something unusable (NaN or Inf logits): damaged or incompatible weights."""

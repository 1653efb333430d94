"""The engine as a service (``python -m SAMMed3DLib serve``): Ray Serve with a FastAPI ingress.

``config`` (options and their checks), ``core`` (one worker's sessions, no Ray), ``worker`` (the Ray actor
holding the model), ``gateway`` (the HTTP API under ``/v1``), ``launch`` (starting Ray, workers and Serve).
Never shipped in Slicer; the torch-free client is ``SAMMed3DLib.remote``, the wire format ``SAMMed3DLib.protocol``.
"""

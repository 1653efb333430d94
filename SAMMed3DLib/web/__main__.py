"""``python -m SAMMed3DLib.web CONFIG_JSON PORT``: one station process (the launcher starts one per session)."""

import sys

from .config import StationConfig
from .session import serve

serve(StationConfig.from_json(sys.argv[1]), int(sys.argv[2]))

"""What the command line chose for every station (light: the launcher reads it without loading Slicer)."""

import json
from dataclasses import asdict, dataclass, fields
from typing import Optional

from ..slicer.models import DEFAULT_MODEL


@dataclass
class StationConfig:
    """Options of every browser session. The page may change the module's options (device, precision, the
    team server), never ``data`` or the limits."""

    weights: str = DEFAULT_MODEL  # registry id or checkpoint path
    device: str = "auto"
    precision: str = "fp32"
    server_url: str = ""  # the team's SAM-Med3D server (device "server")
    server_token: str = ""
    data: Optional[str] = None  # the worklist's folder; None: upload a volume or open the sample
    max_upload_mb: float = 512.0
    owner: str = "browser"  # the annotator's name the others see on the cases (the page can change it)
    target_fps: float = 30.0  # most renders per second of the view under the mouse
    blur_fps: float = 5.0  # of the other views (each mouse move in place mode renders every view showing the points)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> "StationConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in json.loads(text).items() if k in known})

"""What a benchmark ran on: every figure is reported with the CPU model, its core count and the load average,
since this project's machines vary (AMD EPYC, Intel Xeon with AVX-512/AMX) and share their cores."""

import os
import platform
from pathlib import Path
from typing import Dict, List


def load_average() -> List[float]:
    """The 1/5/15-minute load averages (runnable threads; empty where the platform has none)."""
    return [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else []


def machine() -> Dict[str, object]:
    """CPU model (``/proc/cpuinfo``'s model name, else ``platform.processor()``), core count, load average,
    and whether the CPU has bf16 dot-product instructions (see :func:`SAMMed3DLib.device.cpu_has_bf16_products`)."""
    from ..device import cpu_has_bf16_products

    model = ""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                 if line.startswith("model name")]  # fmt: skip
        model = names[0] if names else ""
    return {
        "cpu": model or platform.processor() or "unknown",
        "cores": os.cpu_count(),
        "bf16_instructions": cpu_has_bf16_products(),
        "load_before": load_average(),
    }


def describe(info: Dict[str, object]) -> str:
    """One line: ``CPU <model>, <n> cores, bf16 instructions yes/no, load average a/b/c``."""
    load = "/".join(str(v) for v in info.get("load_before") or []) or "n/a"
    bf16 = "yes" if info.get("bf16_instructions") else "no"
    return f"CPU {info['cpu']}, {info['cores']} cores, bf16 instructions {bf16}, load average {load}"

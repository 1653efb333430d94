"""The benchmark's plumbing (no timings are asserted: the figures are reported, not tested)."""

import json
import subprocess
import sys

import torch

from SAMMed3DLib.bench.network import BenchSettings, format_report, summarise


def _child(embedding_shift: float = 0.0, seconds: float = 1.0) -> dict:
    emb = torch.zeros(1, 384, 8, 8, 8) + embedding_shift
    return {
        "embedding": emb,
        "logits": torch.ones(1, 1, 32, 32, 32),
        "figures": {
            "encode_s": [seconds, seconds * 2, seconds],
            "decode_s": [0.01] * 10,
            "peak_rss_mb": 900.0,
            "peak_gpu_mb": None,
            "threads": 2,
        },
    }


def test_identity_verdict_and_ratio():
    settings = BenchSettings(repeats=3, reference_repeats=3)
    same = summarise(_child(), _child(seconds=8.0), None, settings)
    assert same["identical"] and abs(same["encoder_speedup"] - 8.0) < 1e-9
    off = summarise(_child(), _child(embedding_shift=1e-3), None, settings)
    assert not off["identical"]
    assert any("MISMATCH" in line for line in format_report(off, settings))


def test_bench_command_runs_our_network_end_to_end(tmp_path):
    out = tmp_path / "bench.json"
    cmd = [sys.executable, "-m", "SAMMed3DLib", "bench", "--no-reference", "--repeats", "1", "--device", "cpu"]
    result = subprocess.run([*cmd, "--json", str(out)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "SAMMed3DLib" in result.stdout and "image encoder" in result.stdout
    report = json.loads(out.read_text())
    assert report["ours"]["encode_median_s"] > 0 and report["ours"]["peak_rss_mb"] > 0

"""``benchmarks/bench_gpu.py`` (issue #12): the one GPU-box benchmark script runs end to end and writes a
JSON with every section and numeric ratios. No absolute speed thresholds here: the script prints ratios
measured in the same run, and this only checks that they are there (and that the pool's checkpoints are
byte-identical to a single-process run's, which is a correctness property, not a speed)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_gpu.py"


def _run(tmp_path: Path, *args: str, timeout: float) -> dict[str, Any]:
    out = tmp_path / "b.json"
    proc = subprocess.run([sys.executable, str(SCRIPT), *args, "--out", str(out)], capture_output=True, text=True,
                          timeout=timeout, env=dict(os.environ))  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert "== summary ==" in proc.stdout
    return json.loads(out.read_text())


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0


def _check(report: dict[str, Any], jobs: list[str]) -> None:
    env = report["environment"]
    assert {"device_name", "torch", "cuda", "cudnn"} <= set(env)
    s = report["sections"]
    assert set(s) == {"steps", "overhead", "cells", "eval"}
    assert all(sec["status"] == "ok" for sec in s.values()), {k: v.get("error") or v.get("failed") for k, v in s.items()}
    # 1. steps/s of every 2-D architecture at the three precisions, and their ratios to fp32
    from models import ARCHITECTURES

    archs = s["steps"]["architectures"]
    assert sorted(archs) == sorted(n for n, i in ARCHITECTURES.items() if i.dims == (2,))
    for name, r in archs.items():
        assert all(_number(r["steps_per_s"][p]) for p in ("fp32", "tf32", "bf16")), name
        assert all(_number(r["ratios"][k]) for k in ("tf32/fp32", "bf16/fp32")), name
    assert all(_number(s["steps"]["ratios"][k]) for k in ("tf32/fp32", "bf16/fp32"))
    # 2. runner vs bare PyTorch loop
    assert _number(s["overhead"]["ratios"]["runner/bare"]) and _number(s["overhead"]["ratios"]["epoch runner/bare"])
    # 3. cells/hour per --jobs, speed-ups, and byte-identical checkpoints
    cells = s["cells"]
    assert sorted(cells["runs"], key=int) == jobs
    for key in jobs:
        assert _number(cells["runs"][key]["cells_per_hour"]), key
    assert all(_number(cells["ratios"][f"jobs{k}/jobs1"]) for k in jobs[1:])
    assert cells["identical"] is True
    assert all(cells["runs"][k]["identical"] is True and cells["runs"][k]["checkpoints_compared"] == 16 for k in jobs[1:])
    # 4. checkpoints/s of the metric list; unavailable metrics listed, not failed
    ev = s["eval"]
    assert _number(ev["checkpoints_per_s"]) and ev["metrics"] and not ev["failed"]
    assert set(ev["seconds_per_checkpoint"]) == set(ev["metrics"]) and not set(ev["metrics"]) & set(ev["skipped"])


@pytest.mark.slow
@pytest.mark.heavy
def test_bench_gpu_quick_on_cpu(tmp_path, tmp_cache):
    report = _run(tmp_path, "--device", "cpu", "--quick", "--threads", "1", timeout=400)
    _check(report, ["1", "2"])
    assert report["environment"]["device"] == "cpu"


@pytest.mark.slow
@pytest.mark.gpu
def test_bench_gpu_on_cuda_short_budget(tmp_path, tmp_cache):
    assert torch.cuda.is_available()
    report = _run(tmp_path, "--budget", "120", timeout=900)
    _check(report, ["1", "2", "4", "8"])
    assert report["environment"]["device"].startswith("cuda")

"""The torchvision shim: the import works and torchvision.models builds networks."""

from __future__ import annotations

import subprocess
import sys

from benchmark.core.compat import ensure_torchvision, torchvision_state


def test_torchvision_imports_and_builds_vgg():
    tv = ensure_torchvision()
    assert torchvision_state() in ("native", "shimmed")
    net = tv.models.vgg16(weights=None)
    assert sum(p.numel() for p in net.features.parameters()) == 14_714_688


def test_shim_runs_before_piq_lpips_pyiqa_in_a_fresh_process():
    code = (
        "from benchmark.core.compat import ensure_torchvision, torchvision_state\n"
        "ensure_torchvision()\n"
        "import piq, lpips, pyiqa\n"
        "ensure_torchvision()\n"
        "print(torchvision_state())\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() in ("native", "shimmed")

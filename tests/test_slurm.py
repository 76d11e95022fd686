"""Slurm submission through submitit, run with submitit's local executor (same code path per cell)."""

from __future__ import annotations

import pytest

from benchmark.config import parse_matrix
from benchmark.layout import RunLayout
from benchmark.slurm import SlurmOptions, submit

pytestmark = pytest.mark.slow


def test_submit_trains_each_cell_once_and_resubmit_is_a_no_op(tmp_path):
    matrix = parse_matrix({
        "dataset": {"kind": "synth", "options": {"size": "tiny"}},
        "losses": ["mse", "l1"], "architectures": ["dncnn"], "doses": ["25_360"],
        "training": {"epochs": 1, "batch_size": 4, "patch_size": 32, "patches_per_epoch": 8},
        "device": "cpu",
    })
    out = tmp_path / "slurm_run"
    jobs = submit(matrix, out, SlurmOptions(cluster="local", timeout_min=10, cpus_per_task=1, mem_gb=2))
    assert len(jobs) == 2
    results = sorted(j.result() for j in jobs)
    assert results == ["l1__dncnn__25_360__s0: trained", "mse__dncnn__25_360__s0: trained"]
    assert {c.status for c in RunLayout(out).cells()} == {"done"}
    assert submit(matrix, out, SlurmOptions(cluster="local")) == []

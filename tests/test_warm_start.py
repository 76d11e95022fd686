"""Warm starts (``init_from``, issue #21 §1): a cell starts from another cell's generator weights (an L1
pre-training, then an adversarial fine-tune) or from a checkpoint file with a recorded sha256.

What is tested, on the tiny simulated data: the dependent cell's first epoch starts from exactly the
parent's final (or named) epoch's weights, with a fresh optimizer and the critic a cold start would get;
parents train first in-process, with ``--jobs 2`` and through submitit; a diverged parent fails its
dependents and an unfinished one leaves them waiting; a dependent does not resume once its parent's
checkpoint changed; ``validate`` exits 2 naming the field for a missing parent, a cycle, a wrong epoch,
another architecture, an excluded parent or a file with the wrong sha256; the resolved matrix
round-trips; a dependent's config hash follows its parent's checkpoint; tables and figures label the
shared start."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

import benchmark.runner as runner_module
from analysis.simulate import simulate_trajectories
from analysis.tables import Orders, build_tables
from benchmark.cells import cell_config, dependencies, expand_cells, shared_starts, warm_start_errors
from benchmark.checkpoint import (
    CheckpointError,
    config_hash,
    load_checkpoint,
    read_start_weights,
    save_checkpoint,
)
from benchmark.config import dump_yaml, load_yaml, parse_matrix
from benchmark.core.errors import UserError
from benchmark.core.weights import sha256_file
from benchmark.layout import DIVERGED, DONE, FAILED, LOCK, RunLayout, cell_lock
from benchmark.runner import Runner, resolve_start
from benchmark.slurm import job_plan
from benchmark.workers import _Dispatch

# one xdist worker runs this module: its module-scoped fixtures are built once (--dist loadgroup)
pytestmark = pytest.mark.xdist_group(__name__)

DNCNN = {"name": "dncnn", "kwargs": {"depth": 4, "channels": 8}}
PRE, FT, FT1 = "l1_pretrain", "0.95mse+0.05wgan_gp", "mse_from_epoch1"
# the dependents come first in the matrix: the runner must still train the shared start before them
LOSSES = [
    {"mse": 0.95, "wgan_gp": 0.05, "init_from": {"loss": PRE, "epoch": "final"}},
    {"name": "l1", "label": PRE},
    {"name": "mse", "label": FT1, "init_from": {"loss": PRE, "epoch": 1}},
]
TINY: dict[str, Any] = {
    "dataset": {"kind": "synth", "options": {"size": "tiny"}},
    "losses": LOSSES,
    "architectures": [DNCNN],
    "doses": ["25_360"],
    "training": {"epochs": 2, "batch_size": 4, "patch_size": 32, "patches_per_epoch": 8},
    "device": "cpu",
    "reproducibility": {"kernels": "native"},
}


@pytest.fixture(scope="module", autouse=True)
def _private_cache(tmp_path_factory):
    """One private dataset cache for the module (the pool's workers and submitit's jobs inherit it)."""
    mp = pytest.MonkeyPatch()
    cache = tmp_path_factory.mktemp("warm_cache")
    mp.setenv("LDCT_BENCH_CACHE", str(cache / "ldct-bench"))
    mp.setenv("TORCH_HOME", str(cache / "torch"))
    yield
    mp.undo()


def cid(loss: str) -> str:
    return f"{loss}__dncnn__25_360__s0"


def _data(**changes: Any) -> dict[str, Any]:
    data = json.loads(json.dumps(TINY))
    data.update(changes)
    return data


def _matrix_file(tmp_path: Path, name: str = "m.yaml", **changes: Any) -> str:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(_data(**changes), sort_keys=False))  # kwargs order is part of a cell's bytes
    return str(path)


def _model(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path)["model"]


def _equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ----------------------------------------------------------------------------------- schema and order


def test_the_forms_parse_and_the_resolved_matrix_round_trips():
    m = parse_matrix(_data(architectures=[DNCNN, {**DNCNN, "label": "dn_file",
                                                  "init_from": {"checkpoint": "w.pt", "sha256": "AB" * 32}}]))  # fmt: skip
    assert m.losses[0].label == FT and m.losses[0].init_from is not None and m.losses[0].init_from.loss == PRE
    assert m.losses[2].init_from is not None and m.losses[2].init_from.epoch == 1
    assert m.architectures[1].init_from is not None and m.architectures[1].init_from.sha256 == "ab" * 32  # lower-cased
    dumped = m.model_dump(mode="json")
    assert dumped["losses"][0]["init_from"] == {"loss": PRE, "epoch": "final"}  # the default is written out
    assert parse_matrix(load_yaml(dump_yaml(dumped))) == m
    # a matrix without warm starts dumps exactly as before (no init_from: null anywhere)
    plain = parse_matrix(_data(losses=["mse"]))
    assert "init_from" not in dump_yaml(plain.model_dump(mode="json"))
    assert "init_from" not in cell_config(expand_cells(plain)[0], plain)


@pytest.mark.parametrize(
    ("spec", "needle"),
    [
        ({"loss": PRE, "checkpoint": "w.pt", "sha256": "a" * 64}, "not both"),
        ({"checkpoint": "w.pt"}, "needs both checkpoint"),
        ({"checkpoint": "w.pt", "sha256": "xyz"}, "64 hexadecimal digits"),
        ({"epoch": 2}, "needs loss"),
        ({"loss": PRE, "epoch": 0}, "greater than 0"),
        ({"loss": PRE, "from": "x"}, "init_from.from: unknown key"),
    ],
)
def test_bad_forms_are_schema_errors(spec, needle):
    with pytest.raises(UserError, match="init_from") as err:
        parse_matrix(_data(losses=[{"name": "mse", "init_from": spec}, {"name": "l1", "label": PRE}]))
    assert needle in str(err.value)


def test_parents_come_first_and_the_order_is_stable_otherwise():
    m = parse_matrix(_data(losses=[*LOSSES, "mse"], seeds=[0, 1]))
    ids = [c.cell_id for c in expand_cells(m)]
    plain = [c.cell_id for c in expand_cells(m, ordered=False)]
    assert sorted(ids) == sorted(plain)
    for c in expand_cells(m):
        if c.parent_id is not None:
            assert ids.index(c.parent_id) < ids.index(c.cell_id)
    # per seed: the shared start moves ahead of its first dependent, the rest keeps the matrix order
    assert ids[:4] == [f"{x}__dncnn__25_360__s0" for x in (PRE, FT, FT1, "mse")]
    assert dependencies(expand_cells(m))[f"{FT}__dncnn__25_360__s1"] == [f"{PRE}__dncnn__25_360__s1"]


def test_an_architecture_entry_starts_every_other_loss_from_one():
    """``init_from: {loss: P}`` on an architecture: every loss of it but P starts from P's cell, which is the
    shared start itself (trained from scratch)."""
    m = parse_matrix(_data(losses=["l1", "mse"], architectures=[{**DNCNN, "init_from": {"loss": "l1"}}]))
    assert warm_start_errors(m) == []
    cells = {c.loss.label: c for c in expand_cells(m)}
    assert cells["l1"].parent_id is None and cells["mse"].parent_id == "l1__dncnn__25_360__s0"
    assert shared_starts(m)["loss"] == {"l1": ["mse"]}


def test_the_config_hash_depends_on_the_parent():
    m = parse_matrix(TINY)
    dep = next(c for c in expand_cells(m) if c.loss.label == FT)
    a = cell_config(dep, m, {"cell": cid(PRE), "epoch": 2, "sha256": "a" * 64})
    assert a["init_from"] == {"cell": cid(PRE), "epoch": 2, "sha256": "a" * 64}
    assert config_hash(a) != config_hash(cell_config(dep, m, {"cell": cid(PRE), "epoch": 2, "sha256": "b" * 64}))
    assert config_hash(a) != config_hash(cell_config(dep, m, {"cell": cid(PRE), "epoch": 1, "sha256": "a" * 64}))
    assert config_hash(a) != config_hash(cell_config(dep, m))  # a cold start of the same coordinates
    assert "init_from" not in a["loss"]  # recorded resolved, once


# ------------------------------------------------------------------------------------------ validate


@pytest.mark.parametrize(
    ("changes", "needle"),
    [
        ({"losses": [{"name": "mse", "init_from": {"loss": "l1_pre"}}, {"name": "l1", "label": PRE}]},
         "losses[0].init_from.loss: 'l1_pre' is not a loss label of the matrix (valid: mse, l1_pretrain)"),
        ({"losses": [{"name": "mse", "init_from": {"loss": "l1"}}, {"name": "l1", "init_from": {"loss": "mse"}}]},
         "losses[0].init_from: the warm starts form a cycle: mse__dncnn__25_360__s0 → l1__dncnn__25_360__s0 → "
         "mse__dncnn__25_360__s0"),
        ({"losses": [{"name": "mse", "init_from": {"loss": PRE, "epoch": 3}}, {"name": "l1", "label": PRE}]},
         "losses[0].init_from.epoch: 3 is beyond the parent's 2 epoch(s)"),
        ({"losses": [{"name": "mse", "init_from": {"loss": PRE, "epoch": 1}}, {"name": "l1", "label": PRE}],
          "checkpoints": {"keep": "last"}}, "losses[0].init_from.epoch: the parent's epoch 1 is deleted by checkpoints"),
        ({"losses": [{"name": "mse", "init_from": {"architecture": "wide"}}],
          "architectures": [DNCNN, {"name": "dncnn", "label": "wide", "kwargs": {"depth": 4, "channels": 16}}]},
         "losses[0].init_from.architecture: 'wide' (dncnn {'depth': 4, 'channels': 16}) is not the model of 'dncnn'"),
        ({"losses": [{"name": "mse", "init_from": {"loss": PRE}}, {"name": "l1", "label": PRE}],
          "exclude": [{"loss": PRE}]}, "losses[0].init_from: cell mse__dncnn__25_360__s0 starts from "
                                        "l1_pretrain__dncnn__25_360__s0, which exclude leaves out"),
        ({"losses": [{"name": "mse", "init_from": {"loss": "mse"}}]}, "losses[0].init_from.loss: 'mse' is this entry itself"),
        ({"losses": [{"name": "mse", "init_from": {"loss": PRE}}, {"name": "l1", "label": PRE}],
          "architectures": [{**DNCNN, "init_from": {"loss": PRE}}]}, "also gets the init_from of architecture 'dncnn'"),
    ],
    ids=["missing-parent", "cycle", "epoch-beyond", "epoch-deleted", "other-architecture", "excluded-parent",
         "itself", "two-starts"],
)
def test_validate_exits_2_naming_the_field(tmp_path, cli_main, changes, needle):
    code, err = cli_main("validate", "--matrix", _matrix_file(tmp_path, **changes))
    assert code == 2, err
    assert needle in err and "Traceback" not in err, err


def test_validate_accepts_the_fine_tune_matrix(tmp_path, cli_main):
    code, err = cli_main("validate", "--matrix", _matrix_file(tmp_path))
    assert code == 0, err


# ------------------------------------------------------------------------------------ training runs


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> dict[str, Any]:
    """The fine-tune matrix trained in-process, recording every cell's state when its first epoch starts."""
    out = tmp_path_factory.mktemp("warm") / "run"
    first: list[dict[str, Any]] = []
    real = runner_module.train_epoch

    def spy(state, *args, **kwargs):
        if state.epoch == 0:  # the first epoch of a cell (none resumes here)
            first.append({"model": {k: v.clone() for k, v in state.model.state_dict().items()},
                                "loss": {k: v.clone() for k, v in state.loss.state_dict().items()},
                          "history": list(state.history)})  # fmt: skip
        return real(state, *args, **kwargs)

    mp = pytest.MonkeyPatch()
    mp.setattr(runner_module, "train_epoch", spy)
    order: list[str] = []
    real_run_cell = Runner.run_cell

    def run_cell(self, cell):
        order.append(cell.cell_id)
        return real_run_cell(self, cell)

    mp.setattr(Runner, "run_cell", run_cell)
    try:
        summary = Runner(parse_matrix(TINY), out, quiet=True).run()
    finally:
        mp.undo()
    return {"out": out, "summary": summary, "order": order, "first": dict(zip(order, first, strict=True))}


@pytest.mark.slow
def test_the_shared_start_trains_first_and_every_cell_once(run):
    assert run["order"] == [cid(PRE), cid(FT), cid(FT1)]
    assert sorted(run["summary"].trained) == sorted([cid(PRE), cid(FT), cid(FT1)]) and not run["summary"].failed


@pytest.mark.slow
def test_the_dependent_starts_from_exactly_the_parents_weights(run, tmp_path):
    layout = RunLayout(run["out"])
    parent_final, parent_1 = layout.checkpoint_path(cid(PRE), 2), layout.checkpoint_path(cid(PRE), 1)
    assert _equal(run["first"][cid(FT)]["model"], _model(parent_final))  # epoch: final
    assert _equal(run["first"][cid(FT1)]["model"], _model(parent_1))  # epoch: 1
    assert not _equal(run["first"][cid(FT)]["model"], _model(parent_1))  # so the test can fail
    # ... recorded, with the parent checkpoint's sha256, in the config and in every checkpoint's identity
    cfg = layout.cell_config(cid(FT))
    assert cfg["init_from"] == {"cell": cid(PRE), "epoch": 2, "sha256": sha256_file(parent_final)}
    assert layout.cell_config(cid(FT1))["init_from"]["sha256"] == sha256_file(parent_1)
    ckpt = load_checkpoint(layout.checkpoint_path(cid(FT), 1), cell_id=cid(FT), config=cfg)
    assert ckpt["identity"]["config_sha256"] == config_hash(cfg)
    # nothing else is copied: epoch 1 with an empty history, a fresh optimizer; the critic (the scheme's other
    # network) is what a cold start of the same cell draws
    assert run["first"][cid(FT)]["history"] == [] and ckpt["epoch"] == 1 and len(ckpt["train_state"]["history"]) == 1
    matrix = parse_matrix(TINY)
    cell = next(c for c in expand_cells(matrix) if c.cell_id == cid(FT))
    cold = Runner(matrix, tmp_path / "cold", quiet=True).build(cell, 8)
    assert _equal(run["first"][cid(FT)]["loss"], cold.loss.state_dict())
    assert not _equal(run["first"][cid(FT)]["model"], cold.model.state_dict())
    steps = cold.state_dict()["optimizer"]["state"]
    assert steps == {}  # a cold optimizer; the warm one is built the same way (nothing loaded into it)


@pytest.mark.slow
def test_a_dependent_does_not_resume_once_its_parents_checkpoint_changed(run, tmp_path, cli_main):
    out = tmp_path / "copy"
    shutil.copytree(run["out"], out)
    layout = RunLayout(out)
    # the dependent stopped after epoch 1 (as if killed); the parent was retrained since (other bytes)
    layout.marker(cid(FT), DONE).unlink()
    layout.checkpoint_path(cid(FT), 2).unlink()
    final = layout.checkpoint_path(cid(PRE), 2)
    old = sha256_file(final)
    state = load_checkpoint(final)
    state["model"] = {k: v + 1 if v.is_floating_point() else v for k, v in state["model"].items()}
    save_checkpoint(final, state)
    new = sha256_file(final)
    code, err = cli_main("run", "--matrix", _matrix_file(tmp_path), "--out", str(out), "--quiet")
    assert code == 2, err
    assert cid(FT) in err and cid(PRE) in err and old in err and new in err and "does not resume" in err, err
    assert not layout.marker(cid(FT), DONE).exists() and layout.checkpoints(cid(FT)).keys() == {1}
    # the unchanged parent again: it resumes and finishes
    shutil.copy(run["out"] / "cells" / cid(PRE) / "checkpoints" / "epoch_002.pt", final)
    code, err = cli_main("run", "--matrix", _matrix_file(tmp_path), "--out", str(out), "--quiet")
    assert code == 0, err
    assert layout.checkpoint_path(cid(FT), 2).read_bytes() == (run["out"] / "cells" / cid(FT) / "checkpoints" /
                                                                "epoch_002.pt").read_bytes()  # fmt: skip


def test_a_diverged_parent_fails_its_dependents_and_an_unfinished_one_leaves_them_waiting(tmp_path, monkeypatch):
    monkeypatch.setattr(Runner, "train_cell", lambda self, cell: pytest.fail(f"{cell.cell_id} must not train"))
    matrix = parse_matrix(_data(losses=LOSSES[:2]))
    out = tmp_path / "o"
    layout = RunLayout(out, must_exist=False)
    with cell_lock(layout.marker(cid(PRE), LOCK)) as held:  # another runner trains the parent
        assert held
        summary = Runner(matrix, out, quiet=True).run()
    assert summary.skipped_locked == [cid(PRE)] and summary.waiting == [cid(FT)] and not summary.failed
    assert not layout.marker(cid(FT), FAILED).exists() and layout.cell_config(cid(FT)) is None
    assert "1 waiting for their shared start" in summary.lines()[0]
    layout.write_marker(cid(PRE), DIVERGED, {"epoch": 1, "message": "epoch 1: train_l1 is nan"})
    summary = Runner(matrix, out, quiet=True).run()
    assert summary.diverged == [cid(PRE)] and summary.failed == [cid(FT)]
    message = json.loads(layout.marker(cid(FT), FAILED).read_text())["message"]
    assert f"its shared start {cid(PRE)} diverged" in message and "not trained from scratch" in message


def test_the_pool_hands_out_a_cell_only_after_its_parents():
    class Q(list):
        def put(self, x):
            self.append(x)

    q = Q()
    d = _Dispatch(q, ["a", "b", "c", "d"], {"b": ["a"], "c": ["b"], "d": []}, workers=2)
    assert q == ["a", "d"] and d.waiting == ["b", "c"]
    d.finished("d")
    assert q == ["a", "d"]
    d.finished("a")
    assert q == ["a", "d", "b"]
    d.finished("b")
    assert q == ["a", "d", "b", "c", None, None]  # then one stop per worker
    # a parent that is not in this run (finished before) holds nothing up
    q2 = Q()
    _Dispatch(q2, ["b"], {"b": ["a"]}, workers=1)
    assert q2 == ["b", None]


@pytest.mark.slow
def test_jobs_2_trains_the_shared_start_before_its_dependents(tmp_path, cli_main):
    """Two workers, the dependents first in the matrix: handed out early, one would find its parent unfinished
    and be reported waiting (untrained); the pool trains all three, each from the parent's file."""
    out = tmp_path / "pool"
    code, err = cli_main("run", "--matrix", _matrix_file(tmp_path), "--out", str(out), "--quiet", "--jobs", "2")
    assert code == 0, err
    layout = RunLayout(out)
    assert {c.cell_id: c.status for c in layout.cells()} == {cid(PRE): "done", cid(FT): "done", cid(FT1): "done"}
    for dep, epoch in ((FT, 2), (FT1, 1)):
        assert layout.cell_config(cid(dep))["init_from"]["sha256"] == sha256_file(layout.checkpoint_path(cid(PRE), epoch))


@pytest.mark.slow
def test_slurm_local_submits_parents_first_and_resubmit_is_a_no_op(tmp_path):
    from benchmark.slurm import SlurmOptions, submit

    matrix = parse_matrix(TINY)
    plan = job_plan(expand_cells(matrix), 2)
    assert [[(j.cell_ids, j.after) for j in level] for level in plan] == [
        [([cid(PRE)], [])], [([cid(FT), cid(FT1)], [0])]]
    out = tmp_path / "slurm_run"
    jobs = submit(matrix, out, SlurmOptions(cluster="local", timeout_min=10, cpus_per_task=1, mem_gb=2, cells_per_job=2))
    assert len(jobs) == 2
    results = [r for j in jobs for r in j.results() if not r.endswith(": no cell")]  # the parent's job: 1 of 2 tasks
    assert sorted(results) == sorted(f"{cid(x)}: trained" for x in (PRE, FT, FT1))
    layout = RunLayout(out)
    assert layout.cell_config(cid(FT))["init_from"]["sha256"] == sha256_file(layout.checkpoint_path(cid(PRE), 2))
    assert submit(matrix, out, SlurmOptions(cluster="local")) == []


def test_slurm_dependents_wait_for_their_parents_jobs(tmp_path, monkeypatch):
    """On Slurm a dependent's job is submitted with ``--dependency=afterok:<its parents' job ids>``."""
    import submitit

    import benchmark.slurm as slurm

    submitted: list[tuple[list[str], dict[str, Any]]] = []

    class Job:
        def __init__(self, n: int) -> None:
            self.job_id = str(100 + n)

    class Executor:
        def __init__(self, **kwargs: Any) -> None:
            self.params: dict[str, Any] = {}

        def update_parameters(self, **params: Any) -> None:
            self.params.update(params)

        def batch(self):
            import contextlib

            return contextlib.nullcontext()

        def submit(self, job):
            submitted.append((job.cell_ids, dict(self.params.get("slurm_additional_parameters", {}))))
            return Job(len(submitted) - 1)

    monkeypatch.setattr(slurm, "require_slurm", lambda: None)
    monkeypatch.setattr(submitit, "AutoExecutor", Executor)
    matrix = parse_matrix(_data(losses=[*LOSSES, "mse"]))
    jobs = slurm.submit(matrix, tmp_path / "o", slurm.SlurmOptions(cluster="slurm", timeout_min=5, additional={"mail_type": "END"}))
    assert [ids for ids, _ in submitted] == [[cid(PRE)], [cid("mse")], [cid(FT)], [cid(FT1)]]
    assert submitted[0][1] == submitted[1][1] == {"mail_type": "END"}
    assert submitted[2][1] == submitted[3][1] == {"mail_type": "END", "dependency": "afterok:100"}
    assert len(jobs) == 4


# ------------------------------------------------------------------------------------ checkpoint files


def _state_dict_file(tmp_path: Path) -> tuple[Path, dict[str, torch.Tensor]]:
    from models import build_model

    torch.manual_seed(7)
    weights = build_model("dncnn", DNCNN["kwargs"]).state_dict()
    path = tmp_path / "pretrained.pt"
    torch.save(weights, path)
    return path, weights


def test_a_checkpoint_file_start_is_checked_by_its_sha256(tmp_path, cli_main):
    path, weights = _state_dict_file(tmp_path)
    good = {"checkpoint": str(path), "sha256": sha256_file(path)}
    wrong = {"checkpoint": str(path), "sha256": "0" * 64}
    code, err = cli_main("validate", "--matrix", _matrix_file(tmp_path, losses=[{"name": "mse", "init_from": good}]))
    assert code == 0, err
    code, err = cli_main("validate", "--matrix", _matrix_file(tmp_path, losses=[{"name": "mse", "init_from": wrong}]))
    assert code == 2 and "losses[0].init_from:" in err and f"has sha256 {good['sha256']}, not the {'0' * 64}" in err, err
    # run refuses it too, where validate was skipped (exit 2, nothing trained)
    matrix = parse_matrix(_data(losses=[{"name": "mse", "init_from": wrong}]))
    with pytest.raises(UserError, match="not the 0000"):
        Runner(matrix, tmp_path / "o", quiet=True).run()
    assert not RunLayout(tmp_path / "o").checkpoints(cid("mse"))
    # the right hash: the generator starts from the file's weights exactly
    matrix = parse_matrix(_data(losses=[{"name": "mse", "init_from": good}]))
    cell = expand_cells(matrix)[0]
    runner = Runner(matrix, tmp_path / "o2", quiet=True)
    runner._starts[cell.cell_id] = resolve_start(runner.layout, cell)
    assert _equal(runner.build(cell, 8).model.state_dict(), weights)
    assert cell_config(cell, matrix, runner._starts[cell.cell_id].record)["init_from"] == {"sha256": good["sha256"]}


class _Planted:
    """Unpickling it calls ``open(marker, "w")``: the marker file appears if anything unpickles it."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (self.marker, "w"))


def test_a_checkpoint_file_is_never_unpickled_and_must_fit(tmp_path, cli_main):
    bad, marker = tmp_path / "planted.pt", tmp_path / "ran"
    torch.save({"weight": torch.zeros(1), "note": _Planted(marker)}, bad)
    with pytest.raises(CheckpointError, match="not loaded") as err:
        read_start_weights(bad, sha256_file(bad))  # the right hash: the content is still refused
    assert err.value.reason == "unsafe" and not marker.exists()
    other = tmp_path / "other.pt"
    torch.save({"conv.weight": torch.zeros(3)}, other)
    spec = {"checkpoint": str(other), "sha256": sha256_file(other)}
    code, err = cli_main("validate", "--matrix", _matrix_file(tmp_path, losses=[{"name": "mse", "init_from": spec}]))
    assert code == 2 and "its weights do not fit dncnn" in err, err


# ------------------------------------------------------------------------------------ tables, figures


def test_tables_and_figures_label_the_shared_start(tmp_path, monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    import analysis.figures as figures

    matrix = parse_matrix(TINY)
    traj = simulate_trajectories(losses=(FT, PRE, FT1), architectures=("dncnn",), doses=("25_360",), patients=6,
                                 slices_per_patient=2, epochs=2, metrics={"psnr": (30.0, 1.0, True), "rmse_hu": (20.0, 2.0, False)},
                                 effects={FT: 0.0, PRE: 0.5, FT1: 1.0}, noise_sd=0.3, rng=3)  # fmt: skip
    orders = Orders.from_traj(traj, matrix)
    label = f"{PRE} (shared start of {FT}, {FT1})"
    assert orders.loss_label(PRE) == label and orders.loss_label(FT) == FT
    assert orders.loss_label(PRE, wrap=True) == label.replace(" (", "\n(", 1) and orders.loss_label(FT, wrap=True) == FT
    tables = {t.name: t for t in build_tables(traj, None, None, orders=orders)}
    assert label in tables["metric_psnr"].markdown() and label in tables["rmse_hu_per_dose"].markdown()
    assert set(tables["metric_psnr"].numbers["loss"]) == {FT, PRE, FT1}  # the CSV keeps the plain labels
    assert r"l1\_pretrain (shared start of" in tables["metric_psnr"].latex()
    texts: list[str] = []

    def capture(fig, folder, name):
        texts.extend(t.get_text() for t in fig.findobj(matplotlib.text.Text))
        matplotlib.pyplot.close(fig)
        return []

    monkeypatch.setattr(figures, "save", capture)
    figures.training_loss_figure(traj, orders, tmp_path)
    figures.trajectory_figure(traj, orders, tmp_path, "full_reference")
    assert f"loss: {label}" in texts and label.replace(" (", "\n(") in texts
    plain = Orders.from_traj(traj, parse_matrix(_data(losses=[{"name": "l1", "label": PRE}, "mse"])))
    assert plain.loss_label(PRE) == PRE and plain.starts == {"loss": {}, "architecture": {}}
    assert np.isfinite(pd.to_numeric(tables["metric_psnr"].numbers["mean"])).all()


def test_a_pre_training_architecture_is_the_shared_start_not_the_loss_it_shares():
    """The GAN recipe of the MSTLF mini-study: an architecture ``pre`` (trained with the baseline loss only,
    the other losses excluded) starts every loss of ``main``. ``pre`` is labelled a shared start; the loss
    ``l1`` is not, because its ``main`` cell is a compared arm, not a start."""
    pre, main = {**DNCNN, "label": "pre"}, {**DNCNN, "label": "main", "init_from": {"architecture": "pre", "loss": "l1"}}
    m = parse_matrix(_data(losses=["l1", "mse"], architectures=[pre, main], exclude=[{"loss": "mse", "architecture": "pre"}]))
    assert warm_start_errors(m) == []
    parents = {c.cell_id: c.parent_id for c in expand_cells(m)}
    assert parents["mse__main__25_360__s0"] == parents["l1__main__25_360__s0"] == "l1__pre__25_360__s0"
    assert shared_starts(m) == {"loss": {}, "architecture": {"pre": ["main"]}}

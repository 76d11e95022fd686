"""Issue #19, part A: a shared run folder cannot run code, and a wrong checkpoint is never used.

* **Safe loading.** An object whose unpickling would create a marker file is planted in a checkpoint;
  no command (``analyze``, ``run`` resuming the cell, ``status``, ``score``, ``checkpoints convert``)
  runs it. Every checkpoint the runner writes loads with ``torch.load(weights_only=True)``.
* **Old checkpoints.** A format-1 checkpoint (numpy RNG state, ``TorchVersion``) stops ``run`` and
  ``analyze`` with a message naming the file and the conversion command; ``checkpoints convert``
  refuses without ``--trust`` and, with it, rewrites the file byte for byte as this version writes it.
* **Identity.** A checkpoint copied from another cell (same or another architecture), or one of this
  cell trained with other settings, is kept aside by ``run`` (``*.foreign``, resumed from the last good
  epoch, the same bytes as an uninterrupted run) and skipped by ``analyze`` with a warning naming it;
  so is one that is truncated or that disappears while ``analyze --partial`` reads it.

One tiny run (four cells: two losses x a 4-layer DnCNN and an 8-channel RED-CNN, 2 epochs of 8
patches, native kernels) is trained once; each test works on a copy."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

import analysis.scoring_exec as scoring_exec
from benchmark import checkpoint as ckpt_mod
from benchmark.checkpoint import (
    FORMAT_VERSION,
    CheckpointError,
    load_checkpoint,
    pack_numpy_rng,
    read_checkpoint,
    save_checkpoint,
    unpack_numpy_rng,
)
from benchmark.config import dump_yaml, load_matrix, parse_matrix
from benchmark.layout import DONE, FOREIGN_SUFFIX, UNSAFE_SUFFIX, RunLayout
from benchmark.runner import Runner

pytestmark = pytest.mark.slow

EPOCHS = 2
DNCNN = {"name": "dncnn", "kwargs": {"depth": 4, "channels": 8}}
REDCNN = {"name": "redcnn", "kwargs": {"channels": 8}}
MSE_DN = "mse__dncnn__25_360__s0"
L1_DN = "l1__dncnn__25_360__s0"
MSE_RED = "mse__redcnn__25_360__s0"


def _matrix() -> dict[str, Any]:
    return {
        "dataset": {"kind": "synth", "options": {"size": "tiny"}},
        "losses": ["mse", "l1"],
        "architectures": [DNCNN, REDCNN],
        "doses": ["25_360"],
        "training": {"epochs": EPOCHS, "batch_size": 4, "patch_size": 32, "patches_per_epoch": 8},
        "evaluation": {"metrics": ["psnr", "rmse_hu"], "max_images": 4},
        "reproducibility": {"kernels": "native"},  # trained in this (natively loaded) process
        "device": "cpu",
    }


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> tuple[Path, Path]:
    """(the matrix file, the run trained once, uninterrupted)."""
    base = tmp_path_factory.mktemp("safety")
    matrix = base / "matrix.yaml"
    matrix.write_text(dump_yaml(_matrix()))
    out = base / "ref"
    summary = Runner(parse_matrix(_matrix()), out, quiet=True).run()
    assert len(summary.trained) == 4 and not summary.failed, summary.lines()
    return matrix, out


@pytest.fixture
def run(reference, tmp_path) -> tuple[str, Path]:
    """A private copy of the reference run: (matrix path, run folder)."""
    matrix, out = reference
    return str(matrix), Path(shutil.copytree(out, tmp_path / "run"))


class _Planted:
    """Unpickling it calls ``open(marker, "w")``: the marker file appears if anything unpickles it."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (self.marker, "w"))


def _plant(path: Path, marker: Path) -> None:
    """Rewrite a real checkpoint with the planted object inside (still a dict with every usual key)."""
    state = torch.load(path, weights_only=True)
    state["train_state"]["history"].append({"epoch": 0, "note": _Planted(marker)})
    torch.save(state, path)


def _ckpt(out: Path, cell: str, epoch: int) -> Path:
    return RunLayout(out).checkpoint_path(cell, epoch)


def _unfinish(out: Path, cell: str) -> None:
    RunLayout(out).marker(cell, DONE).unlink()


def _metric_epochs(out: Path, cell: str) -> list[int]:
    traj = pd.read_parquet(RunLayout(out).analysis_file("trajectories.parquet"))
    return sorted(traj.loc[(traj["cell"] == cell) & (traj["source"] == "metric"), "epoch"].unique().tolist())


def _as_format_1(path: Path) -> None:
    """Rewrite a checkpoint as ldct-bench wrote format 1: numpy RNG state as numpy's tuple (an ndarray),
    ``torch_version`` a ``TorchVersion``, no identity, through the same canonical pickler."""
    state = torch.load(path, weights_only=True)
    old = {k: v for k, v in state.items() if k != "identity"}
    old["format_version"] = 1
    old["torch_version"] = torch.__version__
    if "train_state" in old:
        rng = dict(old["train_state"]["rng"])
        rng["numpy"] = unpack_numpy_rng(rng["numpy"])
        old["train_state"] = {**old["train_state"], "rng": rng}
    torch.save(old, path, pickle_module=ckpt_mod._canonical_pickle)  # type: ignore[arg-type]


# --- what the runner writes ---------------------------------------------------------------------


def test_every_checkpoint_loads_weights_only_and_carries_its_identity(reference):
    _, out = reference
    layout = RunLayout(out)
    for cell in layout.cells():
        config = layout.cell_config(cell.cell_id)
        for path in layout.checkpoints(cell.cell_id).values():
            state = torch.load(path, weights_only=True)  # raises on any object weights_only refuses
            assert state["format_version"] == FORMAT_VERSION
            assert state["identity"]["cell_id"] == cell.cell_id
            assert state["identity"]["config_sha256"] == ckpt_mod.config_hash(config)
            assert isinstance(state["torch_version"], str) and type(state["torch_version"]) is str
            load_checkpoint(path, cell_id=cell.cell_id, config=config)


def test_numpy_rng_state_round_trips_through_plain_types():
    np.random.seed(7)  # noqa: NPY002 - the global state the checkpoint captures
    np.random.normal(size=3)  # noqa: NPY002 - leaves a cached gaussian in the state
    state = np.random.get_state()  # noqa: NPY002
    packed = pack_numpy_rng(state)
    assert isinstance(packed["key"], torch.Tensor)
    back = unpack_numpy_rng(packed)
    assert back[0] == state[0] and np.array_equal(back[1], state[1]) and back[1].dtype == np.uint32
    assert back[2:] == tuple(state[2:])


def test_save_refuses_what_weights_only_loading_would_refuse(tmp_path):
    cell = {"cell_id": "c"}
    with pytest.raises(ValueError, match="numpy"):
        save_checkpoint(tmp_path / "epoch_001.pt", {"format_version": FORMAT_VERSION, "epoch": 1, "cell": cell,
                                                     "model": {}, "extra": np.zeros(3)})  # fmt: skip
    assert not (tmp_path / "epoch_001.pt").exists()


# --- no code runs ---------------------------------------------------------------------------------


def test_analyze_does_not_run_a_planted_object(run, tmp_path, cli_main):
    _, out = run
    marker = tmp_path / "PWNED"
    planted = _ckpt(out, MSE_DN, EPOCHS)
    _plant(planted, marker)
    code, err = cli_main("analyze", "--out", str(out), "--quiet", "--bootstrap", "0")
    assert not marker.exists(), "analyze ran code stored in a checkpoint"
    assert code == 0, err
    assert str(planted) in err and "not loaded" in err
    assert _metric_epochs(out, MSE_DN) == [1]  # the planted epoch is skipped, the others scored
    assert _metric_epochs(out, L1_DN) == [1, 2]


def test_run_does_not_run_a_planted_object_and_resumes_before_it(run, reference, tmp_path, cli_main):
    matrix, out = run
    marker = tmp_path / "PWNED"
    planted = _ckpt(out, MSE_DN, EPOCHS)
    _plant(planted, marker)
    _unfinish(out, MSE_DN)
    code, err = cli_main("run", "--matrix", matrix, "--out", str(out), "--quiet")
    assert not marker.exists(), "run ran code stored in a checkpoint"
    assert code == 0, err
    assert planted.with_name(planted.name + UNSAFE_SUFFIX).is_file()  # kept aside, named for why
    assert planted.read_bytes() == _ckpt(reference[1], MSE_DN, EPOCHS).read_bytes()  # retrained exactly


def test_status_and_score_do_not_run_a_planted_object(run, tmp_path, cli_main):
    _, out = run
    marker = tmp_path / "PWNED"
    planted = _ckpt(out, MSE_DN, EPOCHS)
    _plant(planted, marker)
    code, err = cli_main("status", "--out", str(out), "--csv")
    assert code == 0, err
    # score reads images only: a checkpoint, or a pickled object array saved as .npy, is refused unread
    code, err = cli_main("score", str(planted), "--ref", str(planted))
    assert code == 2 and str(planted) in err
    npy = tmp_path / "images"
    npy.mkdir()
    np.save(npy / "a.npy", np.array([_Planted(marker)], dtype=object), allow_pickle=True)
    code, err = cli_main("score", str(npy / "a.npy"), "--metrics", "pique")
    assert code == 2 and "a.npy" in err
    assert not marker.exists(), "status or score ran code stored in a run folder"


def test_convert_never_loads_a_planted_object_even_with_trust(run, tmp_path, cli_main):
    _, out = run
    marker = tmp_path / "PWNED"
    planted = _ckpt(out, MSE_DN, EPOCHS)
    _plant(planted, marker)
    before = planted.read_bytes()
    code, err = cli_main("checkpoints", "convert", "--out", str(out), "--trust")
    assert code == 0, err
    assert not marker.exists(), "convert unpickled a file that is not a format-1 checkpoint"
    assert str(planted) in err and planted.read_bytes() == before


# --- format-1 checkpoints -------------------------------------------------------------------------


def test_format_1_checkpoint_is_named_with_the_conversion_command(run, cli_main):
    matrix, out = run
    old = _ckpt(out, MSE_DN, EPOCHS)
    _as_format_1(old)
    with pytest.raises(CheckpointError, match="checkpoints convert") as info:
        load_checkpoint(old)
    assert info.value.reason == "legacy" and info.value.path == old
    code, err = cli_main("analyze", "--out", str(out), "--quiet", "--bootstrap", "0")
    assert code == 2 and str(old) in err and f"ldct-bench checkpoints convert --out {out} --trust" in err
    _unfinish(out, MSE_DN)
    before = old.read_bytes()
    code, err = cli_main("run", "--matrix", matrix, "--out", str(out), "--quiet")
    assert code == 2 and str(old) in err and "checkpoints convert" in err
    assert old.read_bytes() == before, "run must not discard or rename the user's old checkpoint"


def test_convert_needs_trust_and_restores_the_exact_bytes(run, reference, cli_main):
    _, out = run
    originals = {(c, e): _ckpt(out, c, e).read_bytes() for c in (MSE_DN, MSE_RED) for e in (1, EPOCHS)}
    for cell, epoch in originals:
        _as_format_1(_ckpt(out, cell, epoch))
    legacy = {k: _ckpt(out, *k).read_bytes() for k in originals}
    code, err = cli_main("checkpoints", "convert", "--out", str(out))
    assert code == 2 and "--trust" in err and str(_ckpt(out, MSE_DN, 1)) in err
    assert {k: _ckpt(out, *k).read_bytes() for k in originals} == legacy  # nothing touched without --trust
    code, err = cli_main("checkpoints", "convert", "--out", str(out), "--trust")
    assert code == 0, err
    assert {k: _ckpt(out, *k).read_bytes() for k in originals} == originals
    code, err = cli_main("checkpoints", "convert", "--out", str(out), "--trust")
    assert code == 0 and "warning" not in err  # idempotent: nothing left to convert
    code, err = cli_main("analyze", "--out", str(out), "--quiet", "--bootstrap", "0")
    assert code == 0, err


# --- identity ---------------------------------------------------------------------------------------


def test_analyze_skips_another_cells_checkpoint_naming_it(run, cli_main):
    _, out = run
    target = _ckpt(out, MSE_DN, EPOCHS)
    shutil.copyfile(_ckpt(out, L1_DN, EPOCHS), target)  # same architecture: it would load and score
    code, err = cli_main("analyze", "--out", str(out), "--quiet", "--bootstrap", "0")
    assert code == 0, err
    assert str(target) in err and f"checkpoint of cell {L1_DN}, not of {MSE_DN}" in err
    assert _metric_epochs(out, MSE_DN) == [1]


def test_run_keeps_another_cells_checkpoint_aside_and_resumes(run, reference, cli_main):
    matrix, out = run
    target = _ckpt(out, MSE_DN, EPOCHS)
    shutil.copyfile(_ckpt(out, L1_DN, EPOCHS), target)
    _unfinish(out, MSE_DN)
    code, err = cli_main("run", "--matrix", matrix, "--out", str(out), "--quiet")
    assert code == 0, err
    assert target.with_name(target.name + FOREIGN_SUFFIX).is_file()
    assert target.read_bytes() == _ckpt(reference[1], MSE_DN, EPOCHS).read_bytes()


def test_another_architectures_checkpoint_is_kept_aside_not_a_key_dump(run, reference, capsys):
    matrix, out = run
    target = _ckpt(out, MSE_DN, EPOCHS)
    shutil.copyfile(_ckpt(out, MSE_RED, EPOCHS), target)
    _unfinish(out, MSE_DN)
    summary = Runner(load_matrix(matrix), out, quiet=True).run()  # quiet: the log goes to stdout
    printed = capsys.readouterr().out + "\n".join(summary.lines())
    assert summary.trained == [MSE_DN] and not summary.failed, printed
    assert "state_dict" not in printed and "Missing key" not in printed and "nothing to train" not in printed
    assert f"trained: {MSE_DN}" in printed and f"checkpoint of cell {MSE_RED}" in printed
    assert not RunLayout(out).marker(MSE_DN, "FAILED").exists()
    assert target.read_bytes() == _ckpt(reference[1], MSE_DN, EPOCHS).read_bytes()


def test_this_cell_with_other_settings_is_foreign(run):
    _, out = run
    layout = RunLayout(out)
    config = layout.cell_config(MSE_DN)
    path = _ckpt(out, MSE_DN, 1)
    state = torch.load(path, weights_only=True)
    state["cell"]["training"]["optimizer"]["lr"] = 0.5
    save_checkpoint(path, state)  # a well-formed checkpoint of the same cell id, other settings
    with pytest.raises(CheckpointError, match=r"other settings.*training\.optimizer\.lr") as info:
        load_checkpoint(path, cell_id=MSE_DN, config=config)
    assert info.value.reason == "foreign" and str(path) in str(info.value)
    assert read_checkpoint(path) is not None  # readable; only the identity check refuses it


def test_identity_tolerates_a_default_added_since(run):
    """A checkpoint written before the schema gained a setting (its default) is still the cell's, as
    its config.yaml is (benchmark.layout.config_differences)."""
    _, out = run
    config = RunLayout(out).cell_config(MSE_DN)
    path = _ckpt(out, MSE_DN, 1)
    state = torch.load(path, weights_only=True)
    assert "warmup" in state["cell"]["training"]["scheduler"]
    del state["cell"]["training"]["scheduler"]["warmup"]
    save_checkpoint(path, state)
    load_checkpoint(path, cell_id=MSE_DN, config=config)


def test_analyze_skips_a_truncated_checkpoint(run, cli_main):
    _, out = run
    target = _ckpt(out, MSE_RED, 1)
    target.write_bytes(target.read_bytes()[:1000])
    code, err = cli_main("analyze", "--out", str(out), "--quiet", "--bootstrap", "0")
    assert code == 0, err
    assert str(target) in err and "unreadable" in err
    assert _metric_epochs(out, MSE_RED) == [2]


def test_analyze_partial_skips_a_checkpoint_thinned_while_it_reads(run, cli_main, monkeypatch):
    """``analyze --partial`` beside a ``run`` that deletes an older checkpoint after the analysis listed
    it: the file is skipped with a warning, not a FileNotFoundError."""
    _, out = run
    _unfinish(out, MSE_DN)
    gone = _ckpt(out, MSE_DN, 1)
    real = scoring_exec.load_eval_set

    def thin_then_load(*args: Any, **kwargs: Any):
        gone.unlink(missing_ok=True)  # after the plan was made, before the checkpoint is read
        return real(*args, **kwargs)

    monkeypatch.setattr(scoring_exec, "load_eval_set", thin_then_load)
    code, err = cli_main("analyze", "--out", str(out), "--partial", "--quiet", "--bootstrap", "0")
    assert code == 0, err
    assert str(gone) in err and "disappeared" in err
    assert _metric_epochs(out, MSE_DN) == [2]

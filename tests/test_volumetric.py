"""3-D denoisers: volume patches of consecutive slices of one patient, slab denoising that equals the
whole-volume pass, a 3-D matrix cell that trains, resumes bit-identically and is scored per slice, the
DnCNN3D network, and the configuration errors that stop a mismatched matrix before training."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
import yaml
from torch import nn

from benchmark import cli
from benchmark.checkpoint import load_model
from benchmark.config import parse_matrix
from benchmark.core.conventions import hu_to_net, net_to_hu
from benchmark.core.errors import UserError
from benchmark.data import PairedSlices, open_dataset
from benchmark.data.base import contiguous_volumes
from benchmark.data.dicom import read_header
from benchmark.evaluate import SLAB_CONTEXT, denoise, slab_plan
from benchmark.layout import DONE, RunLayout
from benchmark.runner import Runner
from benchmark.sampling import patient_balanced_weights, sample_volume_patches, window_starts
from models import ARCHITECTURES, build_model, spatial_dims
from models.dncnn import DnCNN3D

TINY = {"kind": "synth", "options": {"size": "tiny"}}  # 96², 4 slices per patient, 5/1/2 patients


@pytest.fixture(scope="module")
def tiny_train() -> PairedSlices:
    return open_dataset(TINY["kind"], TINY["options"]).load("train", "25_360")


# ------------------------------------------------------------------------------------------- volumes


def test_volumes_split_at_patients_and_at_missing_slices():
    patients = ["A"] * 7 + ["B"] * 3
    z = np.array([0.0, 1, 2, 3, 5, 6, 7, 10, 11, 12])  # A misses z = 4
    assert contiguous_volumes(patients, z) == [slice(0, 4), slice(4, 7), slice(7, 10)]
    assert contiguous_volumes(patients) == [slice(0, 7), slice(7, 10)]  # positions unknown: rows per patient
    assert contiguous_volumes(["A", "A", "A"], np.array([0.0, 2.0, 1.0])) == [slice(0, 2), slice(2, 3)]  # not forward
    assert window_starts(contiguous_volumes(patients, z), 3).tolist() == [0, 1, 4, 7]
    with pytest.raises(UserError, match=r"training\.patch_size.*patch depth 5 exceeds.*4 consecutive"):
        window_starts(contiguous_volumes(patients, z), 5)


def test_synth_volumes_are_the_patients(tiny_train):
    vols = tiny_train.volumes()
    assert [v.stop - v.start for v in vols] == [4] * 5
    for v in vols:
        assert len(set(tiny_train.patients[v])) == 1
        assert [s.split("/")[1] for s in tiny_train.slice_ids[v]] == ["000", "001", "002", "003"]
        assert np.allclose(np.diff(tiny_train.positions_mm[v]), 3.0)


def test_dicom_volumes_follow_positions(tmp_path, tmp_cache, rng):
    from test_data_dicom import make_mayo_tree  # DICOM trees written with pydicom

    root = tmp_path / "mayo"
    z = make_mayo_tree(root, rng, n_slices=6)["L109"]  # the validation patient, 1 mm apart
    files = sorted((root / "L109" / "quarter_1mm").iterdir(), key=lambda p: read_header(p).z)
    files[2].unlink()  # its third slice has no low-dose partner: a gap
    val = open_dataset("mayo2016", {"root": str(root), "skip_unpaired": True}).load("val", "quarter")
    np.testing.assert_allclose(val.positions_mm, [z[k] for k in (0, 1, 3, 4, 5)], atol=0.006)
    assert val.volumes() == [slice(0, 2), slice(2, 5)]
    assert window_starts(val.volumes(), 3).tolist() == [2]


# ------------------------------------------------------------------------------------------- sampler


def _net(a: np.ndarray) -> torch.Tensor:
    return hu_to_net(torch.from_numpy(np.array(a, dtype=np.float32)))


def test_volume_patches_are_consecutive_slices_of_one_patient(tiny_train):
    x_all, y_all = _net(tiny_train.inputs), _net(tiny_train.targets)
    d, h, w = 3, 24, 20
    starts = window_starts(tiny_train.volumes(), d)
    x, y, first = sample_volume_patches(x_all, y_all, 32, [d, h, w], starts, torch.Generator().manual_seed(7))
    assert x.shape == y.shape == (32, 1, d, h, w)
    assert len(set(first.tolist())) > 5  # many different windows
    for i, f in enumerate(first.tolist()):
        rows = list(range(f, f + d))
        assert len(set(tiny_train.patients[rows])) == 1, "a patch crosses a patient boundary"
        ks = [int(s.split("/")[1]) for s in tiny_train.slice_ids[rows]]  # <patient>/<slice number>
        assert ks == list(range(ks[0], ks[0] + d))
        # the crop is the same in-plane window of those d slices, in inputs and targets alike
        win = x_all[rows].unfold(1, h, 1).unfold(2, w, 1)  # (d, H-h+1, W-w+1, h, w)
        hits = (win == x[i, 0][:, None, None]).all(-1).all(-1).all(0).nonzero()
        assert len(hits) >= 1
        t, left = hits[0].tolist()
        assert torch.equal(y[i, 0], y_all[rows, t : t + h, left : left + w])


def test_volume_patches_same_seed_same_patches(tiny_train):
    x_all, y_all = _net(tiny_train.inputs), _net(tiny_train.targets)
    starts = window_starts(tiny_train.volumes(), 2)
    weights = patient_balanced_weights(tiny_train.patients[starts.numpy()])

    def draw(seed: int) -> tuple[torch.Tensor, ...]:
        return sample_volume_patches(x_all, y_all, 6, [2, 16, 16], starts, torch.Generator().manual_seed(seed),
                                     augment=True, weights=weights)  # fmt: skip

    a, b, c = draw(3), draw(3), draw(4)
    assert all(torch.equal(p, q) for p, q in zip(a, b, strict=True))
    assert not torch.equal(a[0], c[0])


# ------------------------------------------------------------------------------------- slab denoising


class _Identity3D(nn.Module):
    """A 3-D model returning its input; records the slabs it sees."""

    spatial_dims = 3

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert x.dim() == 5
        self.seen.append(x.clone())
        return x


def test_slabs_stay_inside_volumes_and_identity_round_trips():
    patients = ["A"] * 9 + ["B"] * 5
    hu = np.concatenate([np.full((9, 8, 8), -500.0), np.full((5, 8, 8), 300.0)]).astype(np.float32)
    hu += np.random.default_rng(0).normal(0, 10, hu.shape).astype(np.float32)
    model = _Identity3D()
    out = denoise(model, hu, batch_size=2, volumes=contiguous_volumes(patients), context=1)
    assert out.shape == hu.shape
    np.testing.assert_allclose(out, hu, atol=1e-3)
    assert model.seen and all(s.shape[2] <= 2 + 2 * 1 for s in model.seen)
    means = [float(net_to_hu(s).mean()) for s in model.seen]
    assert all(m < -400 or m > 200 for m in means), "a slab mixes the two patients"


def test_slab_denoising_equals_the_whole_volume_pass():
    torch.manual_seed(0)
    model = DnCNN3D(depth=3, channels=4).eval()  # receptive field: 3 slices either way
    for m in model.modules():  # non-trivial BatchNorm statistics
        if isinstance(m, nn.BatchNorm3d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 2.0)
    rng = np.random.default_rng(1)
    hu = rng.normal(0, 200, (17, 12, 12)).astype(np.float32)
    vols = [slice(0, 11), slice(11, 17)]
    with torch.no_grad():
        whole = np.concatenate([net_to_hu(model(_net(hu[v])[None, None]))[0, 0].numpy() for v in vols])
    slabs = denoise(model, hu, batch_size=3, volumes=vols, context=3)
    assert slabs.shape == hu.shape
    np.testing.assert_allclose(slabs, whole, rtol=0, atol=1e-3)
    assert any(read != keep for read, keep in slab_plan(vols, chunk=3, context=3)), "the volumes went through in slabs"
    # too little context is not exact: the slabs' cuts are seen
    assert np.abs(denoise(model, hu, batch_size=3, volumes=vols, context=1) - whole).max() > 1e-2
    # a subset of rows is each row's output, whatever the neighbours asked for
    rows = [13, 2, 9]
    np.testing.assert_array_equal(denoise(model, hu, batch_size=3, volumes=vols, context=3, rows=rows), slabs[rows])


def test_slab_plan_covers_every_row_once_in_near_equal_chunks():
    vols = [slice(0, 17), slice(17, 18), slice(18, 26)]
    plan = slab_plan(vols, chunk=8, context=SLAB_CONTEXT)
    kept = [r for _, keep in plan for r in range(keep.start, keep.stop)]
    assert kept == list(range(26))
    assert [k.stop - k.start for _, k in plan] == [5, 6, 6, 1, 8]
    for read, keep in plan:
        vol = next(v for v in vols if v.start <= keep.start < v.stop)
        assert vol.start <= read.start <= keep.start and keep.stop <= read.stop <= vol.stop
    assert [k for _, k in slab_plan(vols, chunk=8, limit=12)] == [slice(0, 5), slice(5, 11), slice(11, 12)]


# -------------------------------------------------------------------------------------------- DnCNN3D


def _dncnn3d_parameters(depth: int, channels: int, k: int, batch_norm: bool) -> int:
    first = k**3 * channels + channels
    middle = (depth - 2) * (k**3 * channels * channels + (2 * channels if batch_norm else channels))
    last = k**3 * channels + 1
    return first + middle + last


@pytest.mark.parametrize("kwargs", [{}, {"depth": 5, "channels": 8, "kernel_size": 5}, {"depth": 4, "batch_norm": False}])
def test_dncnn3d_parameter_count_matches_the_formula(kwargs):
    model = build_model("dncnn3d", kwargs)
    args = ARCHITECTURES["dncnn3d"].arguments(kwargs)
    expected = _dncnn3d_parameters(args["depth"], args["channels"], args["kernel_size"], args["batch_norm"])
    assert sum(p.numel() for p in model.parameters()) == expected
    if not kwargs:
        assert ARCHITECTURES["dncnn3d"].parameters == expected


def test_dncnn3d_every_parameter_gets_a_gradient(generator):
    torch.manual_seed(0)
    model = build_model("dncnn3d", {"depth": 5, "channels": 8})
    assert spatial_dims(model) == 3 and ARCHITECTURES["dncnn3d"].dims == (3,)
    assert ARCHITECTURES["dncnn3d"].min_size == 1
    x = torch.rand(2, 1, 5, 12, 12, generator=generator)
    y = model(x)
    assert y.shape == x.shape
    (y - x.flip(-1)).pow(2).mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all() or p.grad.abs().sum() == 0]
    assert not missing, f"parameters without gradient: {missing}"
    with pytest.raises(ValueError, match=r"DnCNN3D expects \(N, C, D, H, W\)"):
        model(torch.rand(2, 1, 12, 12))
    # one implementation: the 2-D and 3-D networks have the same layers
    assert list(build_model("dncnn", {"depth": 5}).state_dict()) == list(build_model("dncnn3d", {"depth": 5}).state_dict())


# ------------------------------------------------------------------------------------------ the cell

UPL3D_L1 = {"label": "upl3d_l1", "terms": [{"name": "upl", "weight": 0.5, "kwargs": {"dims": 3, "depth": 3, "channels": 4}},
                                          {"name": "l1", "weight": 0.5}]}  # fmt: skip


def _matrix(epochs: int = 2) -> dict:
    return {
        "dataset": TINY,
        "losses": [UPL3D_L1, "l1"],
        "architectures": [{"name": "dncnn3d", "kwargs": {"depth": 3, "channels": 4}}],
        "doses": ["25_360"],
        "training": {"epochs": epochs, "batch_size": 2, "patch_size": [3, 24, 24], "patches_per_epoch": 4,
                     "augment": True, "patient_balanced": True, "val_batch_size": 2},
        "evaluation": {"metrics": ["psnr", "ssim", "rmse_hu"], "batch_size": 2},
        "device": "cpu",
    }


@pytest.mark.slow
def test_3d_cell_trains_resumes_bit_identically_and_is_scored_per_slice(tmp_path):
    from analysis.scoring import ScoreOptions, load_trajectories, score_run

    matrix = parse_matrix(_matrix())
    Runner(matrix, tmp_path / "straight", quiet=True).run()
    Runner(matrix, tmp_path / "crashed", quiet=True).run()
    crashed = RunLayout(tmp_path / "crashed")
    cells = [c.cell_id for c in crashed.cells()]
    assert len(cells) == 2
    for cid in cells:  # a crash after epoch 1: only epoch 1's checkpoint survives
        for epoch, path in crashed.checkpoints(cid).items():
            if epoch > 1:
                path.unlink()
        crashed.marker(cid, DONE).unlink()
    torch.manual_seed(12345)
    assert sorted(Runner(matrix, tmp_path / "crashed", quiet=True).run().trained) == sorted(cells)
    straight = RunLayout(tmp_path / "straight")
    for cid in cells:
        a, b = straight.checkpoints(cid), crashed.checkpoints(cid)
        assert sorted(a) == sorted(b) == [1, 2]
        for epoch in a:
            assert a[epoch].read_bytes() == b[epoch].read_bytes(), f"{cid} epoch {epoch} differs"
    hist = straight.history("upl3d_l1__dncnn3d__25_360__s0")
    assert hist[["train_upl", "train_l1", "val_upl", "val_l1", "val_loss"]].notna().all().all()

    summary = score_run(tmp_path / "straight", ScoreOptions(progress=False))
    assert summary.checkpoints == 4 and not summary.skipped
    traj = load_trajectories(tmp_path / "straight")
    scored = traj[traj["source"] == "metric"]
    test = open_dataset(TINY["kind"], TINY["options"]).load("test", "25_360")
    assert scored.groupby(["cell", "epoch"]).ngroups == 4
    for _, rows in scored.groupby(["cell", "epoch"]):
        assert set(rows["metric"]) == {"psnr", "ssim", "rmse_hu"}
        for _, per_metric in rows.groupby("metric"):
            assert sorted(per_metric["image"]) == sorted(test.slice_ids.tolist())  # one row per slice
            assert dict(zip(per_metric["image"], per_metric["patient"], strict=True)) == dict(
                zip(test.slice_ids.tolist(), test.patients.tolist(), strict=True))
    # the scores are of each test volume denoised in its slabs
    ckpt = straight.checkpoints("l1__dncnn3d__25_360__s0")[2]
    pred = denoise(load_model(ckpt), test.inputs, batch_size=2, volumes=test.volumes())
    want = np.sqrt(((pred - test.targets) ** 2).mean(axis=(1, 2)))
    got = scored[(scored["cell"] == "l1__dncnn3d__25_360__s0") & (scored["epoch"] == 2) & (scored["metric"] == "rmse_hu")]
    np.testing.assert_allclose(got.set_index("image").loc[test.slice_ids.tolist(), "value"], want, rtol=1e-4)


# ------------------------------------------------------------------------------ configuration errors


def _validate(tmp_path, monkeypatch, capsys, raw: dict) -> tuple[int, str]:
    """``ldct-bench validate --matrix <raw>`` through the CLI's entry point: (exit code, stderr)."""
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump(raw))
    monkeypatch.setattr(sys, "argv", ["ldct-bench", "validate", "--matrix", str(path)])
    with pytest.raises(SystemExit) as exc:
        cli.main()
    return int(exc.value.code or 0), capsys.readouterr().err


def _base(arch: str, loss: object = "l1", patch: object = (3, 24, 24)) -> dict:
    return {"dataset": TINY, "losses": [loss], "architectures": [{"name": arch, "kwargs": {"depth": 3}}],
            "doses": ["25_360"], "training": {"patch_size": list(patch) if isinstance(patch, tuple) else patch}}  # fmt: skip


@pytest.mark.parametrize(
    ("raw", "field", "says"),
    [
        (_base("dncnn3d", patch=32), "training.patch_size", "a square 2-D patch (32) for the 3-D model"),
        (_base("dncnn3d", patch=None), "training.patch_size", "whole slices (null) for the 3-D model"),
        (_base("dncnn", patch=(3, 24, 24)), "training.patch_size", "a 3-D patch [3, 24, 24] for the 2-D model"),
        (_base("dncnn3d", loss="ssim"), "losses[0] (ssim).terms[0]", "loss 'ssim' as configured takes 2-D inputs"),
        (_base("dncnn3d", loss="upl"), "losses[0] (upl).terms[0]", "(set its kwargs dims: 3)"),
        (_base("dncnn", loss={"name": "upl", "kwargs": {"dims": 3}}, patch=32), "losses[0] (upl).terms[0]",
         "takes 3-D inputs, architecture 'dncnn' is 2-D"),
        (_base("dncnn3d", loss="0.5 l1 + 0.5 ms_ssim"), "losses[0] (0.5l1+0.5ms_ssim).terms[1]", "'ms_ssim'"),
    ],
    ids=["2d-patch-3d-model", "null-patch-3d-model", "3d-patch-2d-model", "ssim-3d", "upl-2d-net-3d-model",
         "upl-3d-net-2d-model", "one-term-of-a-sum"],
)
def test_mismatched_dims_exit_2_naming_the_field(tmp_path, monkeypatch, capsys, raw, field, says):
    code, err = _validate(tmp_path, monkeypatch, capsys, raw)
    assert code == 2, err
    assert f"{field}:" in err and says in err, err
    assert "Traceback" not in err


def test_patch_smaller_than_the_3d_minimum_exits_2(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(DnCNN3D, "min_input_size", staticmethod(lambda **_: 8))  # a model needing 8 voxels a side
    code, err = _validate(tmp_path, monkeypatch, capsys, _base("dncnn3d", patch=(4, 24, 24)))
    assert code == 2
    assert "training.patch_size: [4, 24, 24] has a side smaller than dncnn3d's minimum input size 8" in err
    code, err = _validate(tmp_path, monkeypatch, capsys, _base("dncnn3d", patch=(8, 24, 24)))
    assert code == 0, err


def test_a_matching_or_excluded_pair_is_valid(tmp_path, monkeypatch, capsys):
    code, err = _validate(tmp_path, monkeypatch, capsys, _matrix())
    assert code == 0, err
    # the 2-D-only loss on a 3-D model is fine when that cell is excluded
    raw = _base("dncnn3d", loss="ssim") | {"losses": ["ssim", "l1"], "exclude": [{"loss": "ssim"}]}
    code, err = _validate(tmp_path, monkeypatch, capsys, raw)
    assert code == 0, err


def test_cli_process_exits_2_for_a_2d_patch_on_a_3d_model(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(textwrap.dedent("""
        dataset: {kind: synth, options: {size: tiny}}
        losses: [l1]
        architectures: [dncnn3d]
        doses: ["25_360"]
        training: {patch_size: 64}
    """))
    r = subprocess.run([sys.executable, "-m", "benchmark.cli", "validate", "--matrix", str(bad)], capture_output=True,
                       text=True, timeout=300)  # fmt: skip
    assert r.returncode == 2, r.stderr
    assert "training.patch_size: a square 2-D patch (64) for the 3-D model architectures[0] (dncnn3d)" in r.stderr
    assert "Traceback" not in r.stderr

"""Task-based image quality in analyze / report (analysis.detectability): the identity denoiser gives the LDCT
input's numbers exactly; an invertible linear filter leaves the Hotelling observer's d′ unchanged while the NPW's
changes (the data-processing bound, through the pipeline); crops agree with whole images at the analysed pixels;
the cache is reused and a changed checkpoint is recomputed alone; ``--jobs 2`` writes the ``--jobs 1`` tables;
the dose-equivalent against a hand-computed case; the report's section, tables and figures; config errors.

Runs on ``synth`` ``size: tiny`` (96², 4.2 mm pixels) with 100 realisations per class, one task-set cache for the
module. At that pixel size the CCT189 inserts are barely detectable (d′ ≲ 1 even in the NDCT): these tests check
identities, not detectability values."""

from __future__ import annotations

import re
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn
from torch.nn import functional as F
from typer.testing import CliRunner

from analysis.detectability import (
    CROP_TOLERANCE_HU,
    OBSERVERS,
    SOURCE_INPUT,
    SOURCE_MODEL,
    TaskOptions,
    denoised_images,
    dose_equivalent,
    load_detectability,
    load_ttf,
    object_plan,
    task_run,
)
from analysis.metrics.task import MIN_REALISATIONS
from benchmark import cli
from benchmark.cells import cell_config, expand_cells
from benchmark.checkpoint import FORMAT_VERSION, save_checkpoint
from benchmark.config import TASK_MIN_REALISATIONS, TASK_OBJECTS, TASK_OBSERVERS, parse_matrix
from benchmark.core.errors import UserError
from benchmark.data import open_dataset
from benchmark.data.task_sets import OBJECTS, task_set
from benchmark.layout import DETECTABILITY, DONE, REPORT, RunLayout
from models import ARCHITECTURES, ModelInfo, build_model

# one xdist worker runs this module: its module-scoped fixtures are built once (--dist loadgroup)
pytestmark = pytest.mark.xdist_group(__name__)

N = MIN_REALISATIONS  # 100 per class: the smallest the estimators accept
DATASET = {"kind": "synth", "options": {"size": "tiny", "build_device": "cpu"}}
DNCNN = {"depth": 3, "channels": 8}


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """One ldct-bench cache for the module: the task sets (and the tiny dataset) are built once."""
    mp = pytest.MonkeyPatch()
    mp.setenv("LDCT_BENCH_CACHE", str(tmp_path_factory.mktemp("task-cache")))
    yield
    mp.undo()


class BlockMix(nn.Module):
    """An invertible linear filter: each 2×2 block of pixels (blocks starting at rows ≡ ``dy``, columns ≡ ``dx``
    mod 2) mixed by the fixed well-conditioned 4×4 matrix ``I + 0.3·(J − I)`` (eigenvalues 1.9 and 0.7): it
    blurs within blocks, so it colours the noise, and maps every block-aligned square onto itself."""

    def __init__(self, dy: int = 0, dx: int = 0) -> None:
        super().__init__()
        self.dy, self.dx = dy, dx
        self.mix = nn.Conv2d(4, 4, 1, bias=False)
        with torch.no_grad():
            self.mix.weight.copy_((torch.eye(4) + 0.3 * (torch.ones(4, 4) - torch.eye(4)))[:, :, None, None])

    @staticmethod
    def min_input_size(**_: object) -> int:
        return 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.roll(x, (-self.dy, -self.dx), (2, 3))
        y = F.pixel_shuffle(self.mix(F.pixel_unshuffle(x, 2)), 2)
        return torch.roll(y, (self.dy, self.dx), (2, 3))


class GlobalMean(nn.Module):
    """A global operator: subtracts a tenth of the image mean (every output depends on every input)."""

    @staticmethod
    def min_input_size(**_: object) -> int:
        return 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x - 0.1 * x.mean(dim=(2, 3), keepdim=True)


def make_run(out, architectures, *, losses=("mse",), doses=("25_360",), task=None, seed=0, epochs=1) -> RunLayout:
    """A finished run folder on synth tiny written as the runner does, with untrained networks (seeded)."""
    matrix = parse_matrix({"dataset": DATASET, "losses": list(losses), "doses": list(doses),
                           "architectures": architectures, "training": {"epochs": epochs},
                           "evaluation": {"metrics": ["psnr"], "batch_size": 32,
                                          "task": task or {"objects": ["cct189"], "realisations": N,
                                                           "observers": ["lg_cho", "npw", "ho"]}}})  # fmt: skip
    layout = RunLayout(out, must_exist=False)
    layout.write_matrix(matrix)
    for k, cell in enumerate(expand_cells(matrix)):
        cfg = cell_config(cell, matrix)
        layout.write_cell_config(cell.cell_id, cfg)
        torch.manual_seed(seed + k)
        model = build_model(cell.architecture.name, cell.architecture.kwargs)
        for e in range(1, epochs + 1):
            save_checkpoint(layout.checkpoint_path(cell.cell_id, e),
                            {"format_version": FORMAT_VERSION, "epoch": e, "cell": cfg, "model": model.state_dict()})  # fmt: skip
        layout.write_history(cell.cell_id, [{"epoch": e, "train_loss": 1.0 / e, "val_loss": 1.0 / e, "lr": 1e-4}
                                            for e in range(1, epochs + 1)])  # fmt: skip
        layout.write_marker(cell.cell_id, DONE, {"epochs": epochs})
    return layout


@pytest.fixture(scope="module")
def filters_run(cache, tmp_path_factory):
    """A run whose two cells are the identity (a zero-initialised DnCNN returns its input) and the block
    filter aligned with the Hotelling square of the 10 mm insert, analysed once."""
    ds = open_dataset(DATASET["kind"], DATASET["options"])
    plan = object_plan("cct189", task_set(ds, "cct189", "100_720", N), N)
    ins = next(i for i in plan.inserts if i.diameter_mm == 10)
    top, left = ins.top_left(ins.ho_side)
    mp = pytest.MonkeyPatch()
    mp.setitem(ARCHITECTURES, "test_blockmix", ModelInfo(BlockMix, "test: 2x2 block mixing"))
    out = tmp_path_factory.mktemp("filters") / "run"
    layout = make_run(out, [{"name": "dncnn", "label": "identity", "kwargs": {**DNCNN, "zero_init_output": True}},
                            {"name": "test_blockmix", "label": "blockmix", "kwargs": {"dy": top % 2, "dx": left % 2}}])  # fmt: skip
    summary = task_run(out, TaskOptions(progress=False))
    yield layout, summary, ins
    mp.undo()


def _rows(det: pd.DataFrame, **where) -> pd.DataFrame:
    for k, v in where.items():
        det = det[det[k] == v]
    return det.sort_values(["object", "insert", "observer", "estimator"]).reset_index(drop=True)


NUMBERS = ["object", "insert", "observer", "estimator", "value", "sd", "ci_low", "ci_high", "n_per_class", "flag"]


def test_identity_denoiser_gives_the_input_exactly(filters_run):
    """A denoiser that returns its input: every number (d′, SNR², AUC, their sd and intervals) equals the LDCT
    input's at the cell's condition, bit for bit (same images, same seeds, same splits), through the crop path."""
    layout, summary, _ = filters_run
    det = load_detectability(layout.out)
    model = _rows(det, source=SOURCE_MODEL, architecture="identity")
    inputs = _rows(det, source=SOURCE_INPUT, condition="25_360")
    assert len(model) == len(inputs) > 0 and set(model["observer"]) == {"lg_cho", "npw", "ho"}
    pd.testing.assert_frame_equal(model[NUMBERS], inputs[NUMBERS], check_exact=True)
    assert any(how.startswith("crop") for key, how in summary.denoised.items() if "identity" in key)
    assert sorted(det.loc[det["source"] == SOURCE_INPUT, "condition"].unique()) == ["100_360", "10_360", "25_360", "50_360"]
    assert set(det.loc[det["source"] == "ndct", "condition"]) == {"100_720"}


def test_invertible_filter_keeps_the_hotelling_dprime_and_changes_the_npw(filters_run):
    """Data-processing bound through the pipeline: the block filter maps the Hotelling square of the 10 mm
    insert onto itself invertibly, so the HO's held-out d′, unbiased SNR² and AUC equal the input's (to float32
    rounding of the filtered images); the NPW, which does not whiten, sees the coloured noise and changes."""
    layout, _, ins = filters_run
    det = load_detectability(layout.out)
    model = _rows(det, source=SOURCE_MODEL, architecture="blockmix", insert=ins.name)
    inputs = _rows(det, source=SOURCE_INPUT, condition="25_360", insert=ins.name)
    ho_m, ho_i = model[model["observer"] == "ho"], inputs[inputs["observer"] == "ho"]
    assert set(ho_m["estimator"]) == {"dprime_heldout", "snr2_unbiased", "dprime_unbiased", "auc"}
    np.testing.assert_allclose(ho_m["value"], ho_i["value"], rtol=0, atol=2e-5)  # observed: 3e-6
    np.testing.assert_allclose(ho_m["sd"], ho_i["sd"], rtol=0, atol=2e-5)
    npw_m = model[(model["observer"] == "npw") & (model["estimator"] == "dprime_heldout")]["value"].item()
    npw_i = inputs[(inputs["observer"] == "npw") & (inputs["estimator"] == "dprime_heldout")]["value"].item()
    assert abs(npw_m - npw_i) > 2e-4, (npw_m, npw_i)  # 10 × the HO's tolerance (observed 1.2e-3: the ring-averaged
    # NPW template is less sensitive to the block filter than the pixel template was)


def test_lesions_in_anatomy_run_through_the_pipeline(cache, tmp_path):
    """The ``lesions`` object (hypodense disks in the parenchyma of an abdomen slice) through ``task_run``: rows
    for the denoiser, the LDCT input at every dose of the view count and the NDCT, for each lesion and
    observer; an identity denoiser equals the input bit for bit; and the physics points the right way: the
    NDCT's d′ of the largest lesion exceeds the 10 % input's (measured: about 3 against 0.8)."""
    out = tmp_path / "run"
    make_run(out, [{"name": "dncnn", "label": "identity", "kwargs": {**DNCNN, "zero_init_output": True}}],
             task={"objects": ["lesions"], "realisations": N, "observers": ["lg_cho", "npw"]})  # fmt: skip
    task_run(out, TaskOptions(progress=False))
    det = load_detectability(out)
    assert set(det["object"]) == {"lesions"} and det["insert"].nunique() >= 3
    assert set(det["observer"]) == {"lg_cho", "npw"}
    model, inputs = _rows(det, source=SOURCE_MODEL), _rows(det, source=SOURCE_INPUT, condition="25_360")
    assert len(model) > 0
    pd.testing.assert_frame_equal(model[NUMBERS], inputs[NUMBERS], check_exact=True)
    largest = det.loc[det["diameter_mm"].idxmax(), "insert"]
    d = det[(det["insert"] == largest) & (det["observer"] == "lg_cho") & (det["estimator"] == "dprime_heldout")]
    ndct = d.loc[d["source"] == "ndct", "value"].item()
    low = d.loc[(d["source"] == SOURCE_INPUT) & (d["condition"] == "10_360"), "value"].item()
    assert ndct > low + 0.5, (ndct, low)


def test_crops_agree_with_whole_images(cache):
    """DnCNN (zero padding) and RED-CNN (valid convolutions) denoise a crop around the analysed pixels, which
    agrees with the whole image's output there within CROP_TOLERANCE_HU (0.01 HU) for every realisation; a
    global operator is denoised whole."""
    ds = open_dataset(DATASET["kind"], DATASET["options"])
    ts = task_set(ds, "cct189", "25_360", N)
    plan = object_plan("cct189", task_set(ds, "cct189", "100_720", N), N)
    r0, r1, c0, c1 = plan.region()
    torch.manual_seed(0)
    for model in (build_model("dncnn", {"depth": 5, "channels": 8}),
                  build_model("redcnn", {"channels": 8, "kernel_size": 3}), GlobalMean()):  # fmt: skip
        model.eval()
        part, how = denoised_images(model, ts, plan, device="cpu", batch_size=50)
        whole, _ = denoised_images(model, ts, plan, device="cpu", batch_size=50, crop=False)
        for k in ("present", "absent"):
            a = part.window(k, r0, c0, max(r1 - r0, c1 - c0))
            b = whole.window(k, r0, c0, max(r1 - r0, c1 - c0))
            assert np.abs(a - b).max() <= CROP_TOLERANCE_HU
        cropped = part.present.shape[1:] != whole.present.shape[1:]
        assert cropped == (not isinstance(model, GlobalMean)), how


def test_cache_is_reused_and_a_changed_checkpoint_recomputed(filters_run, tmp_path):
    """A rerun computes nothing and writes the same table; a rewritten checkpoint (other weights, new sha256)
    is recomputed alone, the input's conditions are not."""
    layout, _, _ = filters_run
    out = tmp_path / "run"
    shutil.copytree(layout.out, out)
    before = pd.read_parquet(out / "analysis" / DETECTABILITY)
    again = task_run(out, TaskOptions(progress=False))
    assert (again.checkpoints_computed, again.references_computed) == (0, 0)
    assert (again.checkpoints, again.references) == (2, 5)
    pd.testing.assert_frame_equal(pd.read_parquet(out / "analysis" / DETECTABILITY), before)
    copy = RunLayout(out)
    cell = next(c for c in copy.cells() if c.architecture == "identity")
    path = copy.checkpoint_path(cell.cell_id, 1)
    state = torch.load(path, weights_only=True)
    last = [k for k in state["model"] if k.endswith(".weight")][-1]  # the zero-initialised output convolution
    state["model"][last] = torch.full_like(state["model"][last], 1e-3)
    save_checkpoint(path, state)
    changed = task_run(out, TaskOptions(progress=False))
    assert (changed.checkpoints_computed, changed.references_computed) == (1, 0)
    after = load_detectability(out)
    moved = _rows(after, source=SOURCE_MODEL, architecture="identity")["value"].to_numpy()
    kept = _rows(before, source=SOURCE_MODEL, architecture="identity")["value"].to_numpy()
    assert not np.allclose(moved, kept)


@pytest.mark.slow
def test_two_processes_give_the_serial_table(cache, tmp_path):
    """``--jobs 2`` (spawned workers, cells and input conditions sharded) writes the ``--jobs 1`` parquet files."""
    kw = {"losses": ("mse", "l1"), "task": {"objects": ["cct189", "rods"], "realisations": N, "observers": ["npw"]}}
    serial = make_run(tmp_path / "serial", [{"name": "dncnn", "kwargs": DNCNN}], **kw)
    sharded = make_run(tmp_path / "sharded", [{"name": "dncnn", "kwargs": DNCNN}], **kw)
    s1 = task_run(serial.out, TaskOptions(progress=False))
    s2 = task_run(sharded.out, TaskOptions(progress=False, jobs=2, devices=["cpu"]))
    assert (s1.checkpoints_computed, s1.references_computed) == (s2.checkpoints_computed, s2.references_computed) == (2, 5)
    pd.testing.assert_frame_equal(load_detectability(sharded.out), load_detectability(serial.out))
    pd.testing.assert_frame_equal(load_ttf(sharded.out), load_ttf(serial.out))


def test_dose_equivalent_against_a_hand_computed_case():
    """Input d′ 1, 2, 3, 4 at 10, 25, 50, 100 %: d′ 2.5 lies half-way (in log dose) between 25 and 50 %, i.e. at
    √(25·50) = 35.36 %; d′ 2 at exactly 25 %; below 1 or above 4 is beyond the range; a noisy dip in the input's
    curve is levelled by the running maximum (d′ 1, 3, 2.5, 4: 2.75 lies between 10 and 25 %)."""
    doses, d = [10, 25, 50, 100], [1.0, 2.0, 3.0, 4.0]
    assert dose_equivalent(doses, d, 2.5).dose == pytest.approx(np.sqrt(25 * 50), rel=1e-12)
    assert dose_equivalent(doses[::-1], d[::-1], 2.5).dose == pytest.approx(35.355339, rel=1e-6)  # order-free
    assert dose_equivalent(doses, d, 2.0).dose == pytest.approx(25.0)
    low, high = dose_equivalent(doses, d, 0.5), dose_equivalent(doses, d, 4.5)
    assert np.isnan(low.dose) and low.text() == "beyond the range (< 10 %)"
    assert np.isnan(high.dose) and high.text() == "beyond the range (> 100 %)"
    dip = dose_equivalent(doses, [1.0, 3.0, 2.5, 4.0], 2.75)
    assert dip.dose == pytest.approx(np.exp(np.log(10) + 0.875 * np.log(2.5)))
    assert dose_equivalent(doses, d, 2.5).text(25) == "35.4 % (×1.4)"


@pytest.mark.slow
def test_report_has_the_task_section(cache, tmp_path):
    """``analyze`` then ``report`` through the command line: detectability.parquet and ttf.parquet, the
    detectability and TTF tables (CSV, Markdown, LaTeX), the d′-against-dose, TTF and rank figures, and a
    "Task-based image quality" section stating its definitions, with every link resolving."""
    layout = make_run(tmp_path / "run", [{"name": "dncnn", "kwargs": DNCNN}], losses=("mse", "l1"),
                      task={"objects": ["cct189", "rods"], "realisations": N, "observers": ["lg_cho", "npwe"]})  # fmt: skip
    runner = CliRunner()
    res = runner.invoke(cli.app, ["analyze", "--out", str(layout.out), "--quiet", "--bootstrap", "50"])
    assert res.exit_code == 0, res.output
    assert "task-based image quality: computed 2 of 2 checkpoints" in res.output
    res = runner.invoke(cli.app, ["report", "--out", str(layout.out), "--quiet", "--bootstrap", "50", "--skip-analyze"])
    assert res.exit_code == 0, res.output
    report = layout.analysis_file(REPORT).read_text()
    section = report[report.index("## Task-based image quality"):report.index("## Figures")]
    for text in ("Laguerre–Gauss", "ρ^1.5·exp(−0.98·ρ^0.68)", "500.0 mm", "100 signal-present and 100 signal-absent",
                 "Mann–Whitney", "bootstrap", "Hann window", "LG width a", "ROI side", "TG-233", "Wunderlich & Noo",
                 "Barrett", "2412.02920", "Anastasio", "dose-eq.", "LDCT input", "NDCT reference (100_720)"):  # fmt: skip
        assert text in section, text
    for name in ("detectability_cct189", "ttf_f50_f10"):
        assert all((layout.tables_dir / f"{name}.{ext}").is_file() for ext in ("csv", "md", "tex"))
    for fig in ("dprime_vs_dose_cct189", "ttf_25_360", "psnr_rank_vs_dprime_rank"):
        assert (layout.figures_dir / f"{fig}.png").is_file() and f"figures/{fig}.png" in section
    for link in re.findall(r"\]\(([^)]+)\)", report):
        assert (layout.analysis_dir / link).is_file(), link
    table = pd.read_csv(layout.tables_dir / "detectability_cct189.csv", dtype={"dose": str})
    assert set(table["source"]) == {"model", "input", "ndct"} and set(table["loss"]) >= {"mse", "l1", "LDCT input"}


def test_config_names_and_errors(cli_main, tmp_path):
    """The matrix's task vocabulary is the implemented one; an unknown object names the field, the valid names
    and the closest match; too few realisations, an unknown key and a DICOM dataset with ``evaluation.task`` are
    `validate` errors (exit 2) naming the field; without ``evaluation.task`` nothing changes."""
    assert tuple(TASK_OBJECTS) == OBJECTS and set(TASK_OBSERVERS) == set(OBSERVERS)
    assert TASK_MIN_REALISATIONS == MIN_REALISATIONS
    base = {"losses": ["mse"], "architectures": ["dncnn"], "doses": ["25_360"]}
    with pytest.raises(UserError) as exc:
        parse_matrix({**base, "evaluation": {"task": {"objects": ["cct19", "rods"]}}})
    msg = str(exc.value)
    assert "evaluation.task.objects" in msg and "'cct189'?" in msg and "cct189, lesions, rods" in msg
    with pytest.raises(UserError, match=r"evaluation\.task\.observers: .*unknown observer 'npwf'\. Did you mean 'npw'\?.*npwe"):
        parse_matrix({**base, "evaluation": {"task": {"observers": ["npwf"]}}})
    with pytest.raises(UserError, match=r"evaluation\.task\.realisations: .*between 100 and 10000"):
        parse_matrix({**base, "evaluation": {"task": {"realisations": 50}}})
    with pytest.raises(UserError, match=r"evaluation\.task\.channels: unknown key"):
        parse_matrix({**base, "evaluation": {"task": {"channels": 5}}})
    plain = parse_matrix(base)
    assert plain.evaluation.task is None and "task" not in plain.model_dump(mode="json")["evaluation"]
    path = tmp_path / "dicom.yaml"
    path.write_text("dataset: {kind: dicom_pairs, options: {root: /nowhere}}\nlosses: [mse]\narchitectures: [dncnn]\n"
                    "doses: [quarter]\nevaluation: {task: {objects: [cct189]}}\n")  # fmt: skip
    code, err = cli_main("validate", "--matrix", str(path))
    assert code == 2 and "evaluation.task" in err and "synth" in err and "Traceback" not in err, err

"""The Markdown report (``ldct-bench report``): tables, figures and ``<out>/analysis/report.md``.

:func:`write_report` first runs :func:`analysis.pipeline.analyze_run` (which scores nothing that is
already cached, so this is cheap on a rerun; ``skip_analyze`` uses the analysis files as they are) and
then writes ``analysis/tables/``, ``analysis/figures/`` and ``analysis/report.md``, which links them and
states every convention used. The statistical conventions are written from the options the statistics
ran with (:meth:`analysis.pipeline.StatsOptions.conventions`), so the text cannot drift from the numbers.
"""

from __future__ import annotations

import importlib.metadata as md
import json
import platform
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from analysis.claims import summarise_claims
from analysis.detectability import (
    CROP_TOLERANCE_HU,
    ESTIMATORS,
    OBSERVERS,
    load_detectability,
    load_task_settings,
    load_ttf,
)
from analysis.figures import build_figures, task_figures
from analysis.pipeline import StatsOptions, analyze_run, load_analysis
from analysis.schema import metric_info, metric_names
from analysis.scoring import ScoreOptions, load_input_baseline
from analysis.tables import Orders, build_tables, detectability_tables, ttf_table, write_tables
from benchmark.config import MatrixConfig
from benchmark.core.conventions import parse_window
from benchmark.core.io import atomic_write_text
from benchmark.core.precision import ENVIRONMENT, read_environment
from benchmark.layout import (
    CELLS_CSV,
    CLAIMS_CSV,
    CORRELATIONS,
    DETECTABILITY,
    RANKS,
    REPORT,
    SIGNIFICANCE,
    TABLES,
    TTF_CURVES,
    UNAVAILABLE,
    RunLayout,
)


@dataclass
class ReportOptions:
    """Presentation choices of the report."""

    baseline: str | None = None
    distortion: str = "psnr"
    perception: str = "niqe"
    skip_analyze: bool = False


def _md_table(df: pd.DataFrame) -> str:
    """``df`` as a Markdown table; a ``|`` inside a cell (e.g. ``|Δ to ref|``) is escaped, since tabulate
    leaves it as a column separator."""
    if not len(df):
        return "(none)"
    return df.map(lambda v: v.replace("|", "\\|") if isinstance(v, str) else v).to_markdown(index=False)


def _metric_rows(metrics: list[str]) -> pd.DataFrame:
    rows = []
    for m in metrics:
        i = metric_info(m)
        rows.append({"metric": m, "type": i.kind.replace("_", "-"), "better": ("higher" if i.higher_is_better else "lower") if i.ranked else "none (closer to the reference's texture)",
                     "unit": i.unit or "–", "library": i.library, "definition": i.summary, "reference": i.paper})  # fmt: skip
    return pd.DataFrame(rows)


def _significance_summary(sig: pd.DataFrame) -> pd.DataFrame:
    pairs = sig[sig["test"].isin(["wilcoxon", "t"])]
    if pairs.empty:
        return pd.DataFrame()
    g = pairs.groupby(["metric", "test"], sort=False)
    return pd.DataFrame({
        "comparisons": g.size(),
        "p < 0.05 (raw)": g["p_value"].apply(lambda p: int((p < 0.05).sum())),
        "Holm p < 0.05": g["p_holm"].apply(lambda p: int((p < 0.05).sum())),
        "BH p < 0.05": g["p_bh"].apply(lambda p: int((p < 0.05).sum())),
        "median n": g["n"].median(),
    }).reset_index()  # fmt: skip


def claims_section(claims: pd.DataFrame) -> str:
    """The report's "Claims" section (empty without claims): one row per claim, verdicts in bold."""
    if claims.empty:
        return ""
    summary = summarise_claims(claims)
    table = pd.DataFrame({
        "claim": summary["id"], "statement": summary["statement"], "numbers": summary["numbers"],
        "test": summary["test"], "p (Holm)": summary["p_holm"].map(lambda p: f"{p:.3g}" if pd.notna(p) else "–"),
        "learning gate": summary["gate"], "verdict": summary["verdict"].map(lambda v: f"**{v}**"),
        "seeds": summary["stability"],
    })  # fmt: skip
    return "\n".join([
        "## Claims\n",
        "The matrix's claims (`claims:`), checked on this run. Verdict rule: **holds** when the claimed direction "
        "is significant in every condition (architecture × dose, × feature for texture), **does not hold** when the "
        "reverse is significant in at least one, **inconclusive** otherwise (not enough evidence), and **not "
        "tested** when an arm it compares did not pass the learning gate (see the conventions) in one of its "
        "conditions, whatever its p-values: the learning gate column names the arm, the condition and the number "
        "that failed, or each arm's ratio to the LDCT input when all passed. The seeds column says whether each seed "
        "alone gives the same verdict (stable / seed-dependent), or that the run has one seed, whose verdict "
        "cannot show how much it depends on the seed. Significant: "
        "Holm-corrected p < α over the claim's conditions (Holm 1979); for `agrees`, the 95 % CI of the agreement "
        "lies wholly on one side of the threshold (p (Holm) then shows –); for `equivalent`, the claimed direction "
        "is equivalence within the margin (Wilcoxon TOST) and the reverse a two-sided significant difference "
        "larger than the margin. p (Holm) is the deciding one: the "
        "largest claimed-direction p, or, when a claim does not hold, the smallest reverse p. Every condition: "
        f"[{CLAIMS_CSV}]({CLAIMS_CSV}).\n",
        _md_table(table) + "\n",
    ])  # fmt: skip


def _cells_section(layout: RunLayout) -> str:
    path = layout.analysis_file(CELLS_CSV)
    if not path.is_file():
        return ""
    cells = pd.read_csv(path, dtype={"dose": str})
    counts = cells.groupby("status").size().to_dict()
    text = f"{len(cells)} cells: " + ", ".join(f"{v} {k}" for k, v in counts.items()) + ". "
    left = cells[~cells["analysed"]]
    if len(left):
        text += "Not analysed (unfinished; rerun `ldct-bench analyze --partial` to include partial cells): "
        text += ", ".join(f"`{c}` ({s})" for c, s in zip(left["cell"], left["status"])) + "."
    return text + _training_environments(layout, list(cells["cell"]))


def _training_environments(layout: RunLayout, cells: list[str]) -> str:
    """Where the cells were trained: each distinct device, CPU capability, kernels and threads of their
    ``environment.json`` entries (JSON data only), with how many cells trained there. Native kernels round
    differently on another processor, so a reader needs this to know which machine reproduces the numbers."""
    hosts: dict[str, set[str]] = {}
    missing = 0
    for cell in cells:
        entries = read_environment(layout.cell_dir(cell) / ENVIRONMENT)
        if not entries:
            missing += 1
            continue
        for e in entries:
            if not isinstance(e, dict):
                continue
            desc = f"`{e.get('device_name', e.get('device', '?'))}`"
            if str(e.get("device", "cpu")).startswith("cpu"):
                desc += f" ({e.get('cpu_capability', '?')}, {e.get('kernels', '?')} kernels, {e.get('threads', '?')} thread(s))"
            hosts.setdefault(desc, set()).add(cell)
    if not hosts:
        return ""
    parts = [f"{d}: {len(c)} cell(s)" for d, c in sorted(hosts.items(), key=lambda kv: (-len(kv[1]), kv[0]))]
    text = " Trained on " + "; ".join(parts) + "."
    if missing:
        text += f" {missing} cell(s) recorded no environment."
    return text


def _conventions(settings: dict[str, Any], matrix: MatrixConfig | None, with_input: bool = True) -> str:
    """The report's conventions: the window, SSIM and evaluation from the analysis settings, the
    statistics from the :class:`StatsOptions` they ran with."""
    win = parse_window(settings.get("window", "abdomen"))
    ssim = metric_info("ssim").summary if "ssim" in settings.get("metrics", []) else ""
    lines = [
        f"- **Window**: metrics and images use [{win.lo:g}, {win.hi:g}] HU (level {win.level:g}, width {win.width:g}): "
        "HU clipped to the window and scaled to [0, 1], data range 1. `rmse_hu` is computed on raw HU (no clipping).",
        f"- **SSIM**: {ssim or 'not scored'}.",
        f"- **Evaluation**: split `{settings.get('split', '')}`, {settings.get('images_per_dose', '?')} images per dose, "
        f"{_every(int(settings.get('every', 1)))}.",
        *StatsOptions.from_settings(settings).conventions(),
    ]
    if with_input:
        lines.append(
            "- **LDCT input**: the last row of the metric and RMSE tables, and the dashed grey line in the trajectory "
            "figures, is the low-dose input itself scored against the reference (no denoising): same metrics, window "
            "and images (`input_baseline.parquet`). It repeats in every architecture column, is never bold, carries "
            "no significance marker and is left out of the tests and correlations.")
    if matrix is not None and matrix.claims:
        lines.append(matrix.gate.conventions())
    if matrix is not None:
        lines.insert(0, f"- **Matrix**: `{matrix.name}` — {matrix.description or 'no description'}; dataset "
                        f"`{matrix.dataset.kind}` {json.dumps(matrix.dataset.options)}.")  # fmt: skip
    return "\n".join(lines)


def _every(n: int) -> str:
    return "every epoch" if n == 1 else f"every {n} epochs and always the last"


def small_n_warning(sig: pd.DataFrame) -> str:
    """A note when the units are too few for the Wilcoxon test to reach p < 0.05 (exact two-sided
    minimum p = 2 / 2^n, ≥ 0.0625 for n ≤ 5) or for the t-test to be trustworthy."""
    pairs = sig[sig["test"] == "wilcoxon"]
    if pairs.empty:
        return ""
    n = int(pairs["n"].min())
    if n >= 6:
        return ""
    return (f"**Caution**: some comparisons have only n = {n} units. With n ≤ 5 the exact two-sided Wilcoxon "
            f"signed-rank test cannot reach p < 0.05 (its smallest p is 2/2^n = {2 / 2**n:.3g}), and a paired "
            "t-test on so few units rests entirely on normality. Evaluate more patients, or use `--unit slice` "
            "(slices of one patient are not independent, so its p-values are optimistic).\n")


def _versions() -> str:
    parts = [f"Python {platform.python_version()}"]
    for pkg in ("ldct-bench", "torch", "piq", "pyiqa", "scipy", "statsmodels", "pingouin", "scikit-posthocs"):
        try:
            parts.append(f"{pkg} {md.version(pkg)}")
        except md.PackageNotFoundError:
            continue
    return ", ".join(parts)


def _figure_md(name: str, paths: list[Path], adir: Path, caption: str) -> str:
    png = [p for p in paths if p.suffix == ".png"]
    pdf = [p for p in paths if p.suffix == ".pdf"]
    out = []
    for a, b in zip(png, pdf):
        rel, relpdf = a.relative_to(adir).as_posix(), b.relative_to(adir).as_posix()
        out.append(f"![{a.stem}]({rel})\n\n*{caption}* ([PDF]({relpdf}))\n")
    return "\n".join(out)


FIGURE_CAPTIONS = {
    "training_loss": "Training (solid) and validation (dashed) loss per epoch; one panel per loss.",
    "trajectories_full_reference": "Full-reference metrics over epochs, one line per loss; band ±1 sd over images and seeds; "
                                   "dashed grey: the LDCT input (mean).",
    "trajectories_no_reference": "No-reference metrics over epochs, one line per loss; band ±1 sd over images and seeds; "
                                   "dashed grey: the LDCT input (mean).",
    "correlation_heatmap": "Spearman ρ between the loss and each metric over epochs, mean over the cells of a loss.",
    "perception_distortion": "Perception–distortion plane (Blau & Michaeli 2018) at the compared epoch.",
    "comparison": "Visual comparison: LDCT input, each loss's output and the NDCT reference; zoomed region below.",
    "nps": "Radial noise power spectrum (ICRU 87, AAPM TG-233) of image − reference in uniform ROIs of the "
           "visual-comparison slice, one curve per loss; dashed grey: the LDCT input; dotted black (noisy NDCT "
           "reference only): the reference's own noise. Log y axis (HU²·mm²), x in mm⁻¹. A curve below the input's "
           "at high frequencies and close to it in shape keeps the noise texture; a curve shifted to low "
           "frequencies is the blotchy texture of over-smoothing.",
    "cd": "Critical-difference diagram (Demšar 2006): mean ranks, bars join losses not significantly different.",
}


TASK_CAPTIONS = {
    "dprime_vs_dose": "d′ (leading observer, held-out, ± sd) against the total dose (dose × views / 720, log axis), one "
                      "line per loss; dashed grey: the LDCT input at every dose of each view count; dotted black: the "
                      "NDCT reference. Panels: the two smallest and the largest insert (all of up to three).",
    "ttf": "Task transfer function (TG-233) per rod contrast, one line per loss · architecture (final epoch, seeds "
           "averaged); dashed grey: the LDCT input at that dose; dotted black: the NDCT reference. Grey lines: 0.5 and 0.1.",
    "rank_vs_dprime": "Each loss's rank on the distortion metric (x, 1 = best) against its mean d′ rank over the "
                      "inserts (y, 1 = best), final epoch: on the diagonal the orders agree; a loss far from it wins "
                      "one and loses the other.",
}
TASK_REFERENCES = (
    "E. Samei et al., Performance evaluation of computed tomography systems: the report of AAPM Task Group 233, "
    "Med. Phys. 46(11), e735–e756, 2019 (TTF, NPS, d′ from TTF and NPS, NPWE eye filter).",
    "A. Wunderlich, F. Noo, Estimation of channelized Hotelling observer performance with known class means or known "
    "difference of class means, IEEE Trans. Med. Imaging 28(8), 1198–1207, 2009 (unbiased SNR² and its intervals).",
    "H. H. Barrett, K. J. Myers, Foundations of Image Science, Wiley, 2004, ch. 13–14 (Hotelling, CHO, NPW, AUC).",
    "P. Kc, R. Zeng, Evaluating the detectability of low-contrast signals in deep-learning-denoised CT, arXiv "
    "2412.02920, 2024 (model-observer evaluation of CT denoisers).",
    "K. Li, W. Zhou, H. Li, M. A. Anastasio, Assessing the impact of deep neural network-based image denoising on "
    "binary signal detection tasks, IEEE Trans. Med. Imaging 40(9), 2295–2305, 2021 (the data-processing bound: "
    "no denoiser can raise the ideal observer's detectability).",
)


def _task_definitions(settings: dict[str, Any], det: pd.DataFrame) -> str:
    """The definitions of the task section, from the settings the analysis ran with."""
    eye = settings.get("eye_filter", {})
    n = settings.get("realisations", "?")
    observers = settings.get("observers", [])
    lines = [
        f"- **Realisations**: {n} signal-present and {n} signal-absent images per class and condition (independent noise, "
        "the signal in the object before projection; `benchmark.data.task_sets`), analysed for each cell's denoiser at "
        f"its {'final epoch' if settings.get('epochs') == 'final' else 'scored epochs'}, for the LDCT input itself at every "
        "dose of each view count of the matrix, and for the NDCT reference (100 % dose, 720 views).",
        "- **Observers**: " + "; ".join(f"`{o}`: {OBSERVERS[o]}" for o in observers if o in OBSERVERS) + ". Signal known "
        "exactly at a known location; ROIs centred on the insert, each minus its own mean.",
        f"- **Eye filter** (`npwe`): E(ρ) = ρ^{eye.get('n', '?')}·exp(−{eye.get('c', '?')}·ρ^{eye.get('a', '?')}), ρ in "
        f"cycles/degree at a viewing distance of {eye.get('viewing_distance_mm', '?')} mm and a display magnification of "
        f"{eye.get('magnification', '?')}, scaled to a peak of 1; no internal noise.",
        "- **Estimators**: " + "; ".join(f"`{k}`: {v}" for k, v in ESTIMATORS.items()) + ".",
        "- **TTF** (TG-233): mean of the signal-present rod images, radial edge-spread function in 0.1 px bins around the "
        "known centre, its derivative (LSF), a Hann window over ±R about the edge, |FFT| normalised at 0; f50 / f10 by "
        "linear interpolation (`analysis.metrics.task.ttf`).",
        f"- **Denoising**: each object's realisations through the cell's network, on a crop around the analysed pixels "
        f"when it agrees with the whole image within {settings.get('crop_tolerance_hu', CROP_TOLERANCE_HU)} HU there "
        "(checked per checkpoint and object), else whole.",
    ]
    flagged = det[det["estimator"] == "dprime_fourier"]
    if len(flagged):
        by_source = flagged.assign(kind=flagged["source"].where(flagged["source"] != "model", "denoiser"))
        counts = ", ".join(f"{k}: {int(g['flag'].sum())} of {len(g)}" for k, g in by_source.groupby("kind", sort=True))
        lines.append(f"- **Fourier cross-check** (`flag` in `detectability.parquet`; {counts}): for NPW/NPWE, the d′ of "
                     "the linear model's own template (the disk through the measured TTF) applied to the images "
                     "(`dprime_model`) differs from the TTF + NPS d′ by more than ±25 %, i.e. the output is not "
                     "described by a linear, shift-invariant system with stationary noise at the task's contrast; for "
                     "a CHO/HO, its held-out d′ exceeds the prewhitening (ideal linear) d′ by more than 25 %. On the "
                     "linear LDCT input a few flags are expected where d′ < 0.5 (sampling noise of a small d′).")  # fmt: skip
    skipped = settings.get("skipped") or {}
    if skipped:
        lines.append("- **Not analysed**: " + ", ".join(f"`{c}` ({r})" for c, r in skipped.items()) + ".")
    inserts = pd.DataFrame(settings.get("inserts", []))
    table = ""
    if len(inserts):
        inserts = inserts.assign(gabor_bands=inserts["gabor_bands"].map(lambda b: ", ".join(f"[{lo:g}, {hi:g}]" for lo, hi in b)))
        table = "\n\nPer insert (pixels of " + f"{settings.get('pixel_mm', float('nan')):.3g} mm):\n\n" + _md_table(
            inserts[["object", "name", "diameter_mm", "contrast_hu", "roi", "lg_width_px", "ho_side", "gabor_bands"]]
            .rename(columns={"name": "insert", "roi": "ROI side", "lg_width_px": "LG width a", "ho_side": "ho side",
                             "gabor_bands": "Gabor bands (cycles/px)"}))  # fmt: skip
    refs = "\n\nReferences: " + " ".join(f"[{i + 1}] {r}" for i, r in enumerate(TASK_REFERENCES))
    return "\n".join(lines) + table + refs + "\n"


def task_section(layout: RunLayout, matrix: MatrixConfig | None, traj: pd.DataFrame, orders: Orders,
                 distortion: str = "psnr") -> str:  # fmt: skip
    """The report's "Task-based image quality" section (empty unless the matrix sets ``evaluation.task``):
    writes its tables and figures, returns the Markdown."""
    if matrix is None or matrix.evaluation.task is None:
        return ""
    det = load_detectability(layout.out)
    if det is None or det.empty:
        return "## Task-based image quality\n\nNot computed yet: run `ldct-bench analyze`.\n"
    settings = load_task_settings(layout.out)
    observers = settings.get("observers") or matrix.evaluation.task.observers
    tables = detectability_tables(det, orders, observers)
    ttf = ttf_table(det, orders)
    tables += [ttf] if ttf is not None else []
    write_tables(tables, layout.tables_dir)
    figs = task_figures(traj, det, load_ttf(layout.out), orders, layout.figures_dir, observers,
                        settings.get("pixel_mm"), distortion)  # fmt: skip
    parts = [
        "## Task-based image quality\n",
        "Can a reader still find a low-contrast lesion after denoising? Model observers on simulated signal-present and "
        "signal-absent images answer that where PSNR cannot: a denoiser may lower the noise and blur the lesion with it. "
        "No processing of the images can raise the ideal observer's detectability (data-processing inequality [5]); a "
        "denoiser can only help observers that are not ideal (the channelized, non-prewhitening and human-like ones).\n",
        _task_definitions(settings, det),
        "Tables: " + ", ".join(f"`{t.name}` ([csv]({TABLES}/{t.name}.csv), [tex]({TABLES}/{t.name}.tex))" for t in tables)
        + f"; every number: [{DETECTABILITY}]({DETECTABILITY}), the TTF curves [{TTF_CURVES}]({TTF_CURVES}).\n",
    ]  # fmt: skip
    parts += [t.markdown() for t in tables]
    for name, paths in figs.items():
        if paths:
            parts.append(_figure_md(name, paths, layout.analysis_dir, TASK_CAPTIONS.get(name, "")))
    return "\n".join(parts)


def write_report(out: Path | str, score: ScoreOptions | None = None, stats: StatsOptions | None = None,
                 opts: ReportOptions | None = None) -> Path:  # fmt: skip
    """Tables, figures and ``report.md`` (running :func:`analyze_run` first unless ``skip_analyze``)."""
    out = Path(out)
    stats = (stats or StatsOptions()).check()
    opts = opts or ReportOptions()
    res = load_analysis(out, stats) if opts.skip_analyze else analyze_run(out, score, stats)
    layout = RunLayout(out, must_exist=False)
    matrix = layout.matrix_or_none()
    orders = Orders.from_traj(res.trajectories, matrix)
    unit_note = "per-patient means" if res.settings.get("unit", stats.unit) == "patient" else "slices"
    inputs = load_input_baseline(out)
    metrics = metric_names(res.trajectories)  # the scored metrics: the metrics section and the tables
    tables = build_tables(res.trajectories, res.significance, res.correlations, orders=orders,
                          baseline=opts.baseline, epoch=res.settings.get("epoch", stats.epoch), unit_note=unit_note,
                          inputs=inputs, metrics=metrics)  # fmt: skip
    table_paths = write_tables(tables, layout.tables_dir)
    window = res.settings.get("window", "abdomen")
    figs = build_figures(res.trajectories, res.correlations, res.ranks, orders, layout.figures_dir,
                         examples_dir=layout.examples_dir, window=window, epoch=res.settings.get("epoch", stats.epoch),
                         distortion=opts.distortion, perception=opts.perception, inputs=inputs)  # fmt: skip
    path = layout.analysis_file(UNAVAILABLE)
    unavailable = pd.read_csv(path) if path.is_file() else pd.DataFrame()
    parts = [
        f"# ldct-bench report: {matrix.name if matrix is not None else out.name}\n",
        f"Run folder `{out}`; written {datetime.now(UTC).isoformat(timespec='seconds')} with {_versions()}.\n",
        _cells_section(layout) + "\n",
        "## Conventions\n", _conventions(res.settings, matrix, with_input=len(inputs) > 0) + "\n",
        "## Metrics\n", _md_table(_metric_rows(metrics)) + "\n",
        "### Unavailable metrics\n",
        (_md_table(unavailable) if len(unavailable) else "All requested metrics were computed.") + "\n",
        claims_section(res.claims),
        "## Tables\n",
        "Each table is also available as CSV (numbers) and LaTeX (booktabs): "
        + ", ".join(f"`{n}` ([csv]({TABLES}/{n}.csv), [tex]({TABLES}/{n}.tex))" for n in table_paths) + ".\n",
    ]  # fmt: skip
    parts += [t.markdown() for t in tables]
    parts += ["## Significance\n",
              f"Full results: [{SIGNIFICANCE}]({SIGNIFICANCE}) (pairwise tests, Friedman, Nemenyi) and "
              f"[{RANKS}]({RANKS}). Counts of pairwise comparisons:\n",
              _md_table(_significance_summary(res.significance)) + "\n",
              small_n_warning(res.significance),
              "## Loss–metric correlations\n",
              f"Full results: [{CORRELATIONS}]({CORRELATIONS}) (scopes `cell`, `pooled`, `final`).\n",
              task_section(layout, matrix, res.trajectories, orders, opts.distortion),
              "## Figures\n"]  # fmt: skip
    for name, paths in figs.items():
        if paths:
            parts.append(f"### {name.replace('_', ' ')}\n")
            parts.append(_figure_md(name, paths, layout.analysis_dir, FIGURE_CAPTIONS.get(name, "")))
    path = layout.analysis_file(REPORT)
    atomic_write_text(path, "\n".join(parts))
    return path

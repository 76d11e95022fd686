"""From a finished run folder to ``<out>/analysis/``: the analysis step and the Markdown report.

:func:`analyze_run` (``ldct-bench analyze``) scores the checkpoints (:mod:`analysis.trajectories`,
incremental) and writes the numbers::

    analysis/trajectories.parquet      tidy per-image metric values + per-epoch losses
    analysis/input_baseline.parquet    the same metrics of the LDCT input itself (no denoising), per dose
    analysis/correlations.csv          loss–metric correlations (analysis.correlations)
    analysis/significance.csv          paired tests, corrections, effect sizes (analysis.significance)
    analysis/friedman_ranks.csv        mean ranks, Demšar CD and Nemenyi p-values per condition
    analysis/unavailable_metrics.csv   metrics that could not run here, and why
    analysis/cells.csv                 every cell's status and whether it was analysed
    analysis/settings.json             the settings of this analysis (read by the report)

:func:`write_report` (``ldct-bench report``) first runs :func:`analyze_run` (which scores nothing that
is already cached, so this is cheap on a rerun; ``skip_analyze`` uses the files above as they are) and
then writes ``analysis/tables/``, ``analysis/figures/`` and ``analysis/report.md``, which links them and
states every convention used.
"""

from __future__ import annotations

import json
import platform
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from analysis import correlations as corr_mod
from analysis import significance as sig_mod
from analysis.figures import build_figures
from analysis.tables import Orders, build_tables, write_tables
from analysis.trajectories import (
    ANALYSIS_DIR,
    CELLS_CSV,
    EPOCH_CHOICES,
    EXAMPLES_DIR,
    UNAVAILABLE,
    ScoreOptions,
    ScoreSummary,
    load_input_baseline,
    load_trajectories,
    metric_info,
    score_run,
)
from benchmark.errors import UserError

CORRELATIONS = "correlations.csv"
SIGNIFICANCE = "significance.csv"
RANKS = "friedman_ranks.csv"
SETTINGS = "settings.json"
REPORT = "report.md"


@dataclass
class StatsOptions:
    """Statistical settings shared by ``analyze`` and ``report`` (see :mod:`analysis.significance`)."""

    unit: str = "patient"
    epoch: str = "final"
    family: str = "metric"
    n_resamples: int = 2000
    seed: int = 0

    def check(self) -> StatsOptions:
        """Raise a :class:`UserError` naming the bad option and the allowed values."""
        for name, value, allowed in (("unit", self.unit, sig_mod.UNITS), ("epoch", self.epoch, EPOCH_CHOICES),
                                     ("family", self.family, sig_mod.FAMILIES)):  # fmt: skip
            if value not in allowed:
                raise UserError(f"{value!r}: allowed are {', '.join(allowed)}", field=f"--{name}")
        if self.n_resamples < 0:
            raise UserError(f"{self.n_resamples}: the number of bootstrap resamples must be >= 0", field="--bootstrap")
        return self


@dataclass
class AnalysisResult:
    """What :func:`analyze_run` produced (also written to disk)."""

    trajectories: pd.DataFrame
    correlations: pd.DataFrame
    significance: pd.DataFrame
    ranks: pd.DataFrame
    summary: ScoreSummary | None = None
    settings: dict = field(default_factory=dict)


def analysis_dir(out: Path | str) -> Path:
    return Path(out) / ANALYSIS_DIR


def _matrix(out: Path):
    from benchmark.layout import RunLayout

    layout = RunLayout(out, must_exist=False)
    return layout.matrix() if layout.matrix_path.is_file() else None


def sort_levels(traj: pd.DataFrame, orders: Orders) -> pd.DataFrame:
    """Rows in the display order (architecture, dose and loss as in the matrix), so every output table
    lists conditions in the same order as the figures."""
    rank = {
        "architecture": {a: i for i, a in enumerate(orders.architectures)},
        "dose": {d: i for i, d in enumerate(orders.doses)},
        "loss": {x: i for i, x in enumerate(orders.losses)},
    }
    keys = pd.DataFrame({k: traj[k].astype(str).map(v) for k, v in rank.items()})
    order = keys.sort_values(["architecture", "dose", "loss"], kind="stable").index
    return traj.loc[order].reset_index(drop=True)


def compute_statistics(traj: pd.DataFrame, stats: StatsOptions, orders: Orders) -> tuple[pd.DataFrame, ...]:
    """Correlations, significance table and Friedman ranks from a trajectory table."""
    traj = sort_levels(traj, orders)
    corr = corr_mod.correlations(traj, n_resamples=stats.n_resamples, seed=stats.seed)
    sig, ranks = sig_mod.significance(traj, unit=stats.unit, epoch=stats.epoch, family=stats.family,  # type: ignore[arg-type]
                                      loss_order=orders.losses, n_resamples=stats.n_resamples, seed=stats.seed)  # fmt: skip
    return corr, sig, ranks


def write_statistics(adir: Path, corr: pd.DataFrame, sig: pd.DataFrame, ranks: pd.DataFrame) -> None:
    adir.mkdir(parents=True, exist_ok=True)
    corr.to_csv(adir / CORRELATIONS, index=False)
    sig.to_csv(adir / SIGNIFICANCE, index=False)
    ranks.assign(nemenyi=ranks["nemenyi"].map(json.dumps)).to_csv(adir / RANKS, index=False)


def read_ranks(path: Path) -> pd.DataFrame:
    ranks = pd.read_csv(path, dtype={"dose": str, "architecture": str, "loss": str})
    return ranks.assign(nemenyi=ranks["nemenyi"].map(json.loads))


def analyze_run(out: Path | str, score: ScoreOptions | None = None, stats: StatsOptions | None = None) -> AnalysisResult:
    """Score the run (incrementally) and write the numeric outputs listed in the module docstring."""
    stats = (stats or StatsOptions()).check()
    out = Path(out)
    summary = score_run(out, score)
    traj = load_trajectories(out)
    if traj[traj["source"] == "metric"].empty:
        raise UserError("no finished cell has checkpoints to score yet (see analysis/cells.csv)", field=str(out))
    matrix = _matrix(out)
    orders = Orders.from_traj(traj, matrix)
    corr, sig, ranks = compute_statistics(traj, stats, orders)
    adir = analysis_dir(out)
    write_statistics(adir, corr, sig, ranks)
    settings = {
        **asdict(stats),
        "metrics": summary.metrics,
        "unavailable": summary.unavailable,
        "window": str(matrix.evaluation.window) if matrix is not None else "abdomen",
        "split": matrix.evaluation.split if matrix is not None else "",
        "every": (score.every if score and score.every else matrix.evaluation.every) if matrix is not None else 1,
        "images_per_dose": summary.images // max(1, len({c for c in traj["dose"]})),
        "written": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    (adir / SETTINGS).write_text(json.dumps(settings, indent=1))
    return AnalysisResult(traj, corr, sig, ranks, summary, settings)


def load_analysis(out: Path | str, stats: StatsOptions) -> AnalysisResult:
    """Read the outputs of :func:`analyze_run`; statistics missing on disk are recomputed."""
    out = Path(out)
    adir = analysis_dir(out)
    traj = load_trajectories(out)
    settings = json.loads((adir / SETTINGS).read_text()) if (adir / SETTINGS).is_file() else asdict(stats)
    paths = [adir / CORRELATIONS, adir / SIGNIFICANCE, adir / RANKS]
    if all(p.is_file() for p in paths):
        dtypes = {"dose": str, "architecture": str, "loss": str, "cell": str, "seed": str, "loss_a": str, "loss_b": str}
        corr = pd.read_csv(paths[0], dtype=dtypes)
        sig = pd.read_csv(paths[1], dtype=dtypes)
        ranks = read_ranks(paths[2])
    else:
        orders = Orders.from_traj(traj, _matrix(out))
        corr, sig, ranks = compute_statistics(traj, stats, orders)
        write_statistics(adir, corr, sig, ranks)
    return AnalysisResult(traj, corr, sig, ranks, None, settings)


# -------------------------------------------------------------------------------------------- report


@dataclass
class ReportOptions:
    """Presentation choices of the report."""

    baseline: str | None = None
    distortion: str = "psnr"
    perception: str = "niqe"
    skip_analyze: bool = False


def _md_table(df: pd.DataFrame) -> str:
    return df.to_markdown(index=False) if len(df) else "(none)"


def _metric_rows(metrics: list[str]) -> pd.DataFrame:
    rows = []
    for m in metrics:
        i = metric_info(m)
        rows.append({"metric": m, "type": i.kind.replace("_", "-"), "better": "higher" if i.higher_is_better else "lower",
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


def _cells_section(adir: Path) -> str:
    path = adir / CELLS_CSV
    if not path.is_file():
        return ""
    cells = pd.read_csv(path, dtype={"dose": str})
    counts = cells.groupby("status").size().to_dict()
    text = f"{len(cells)} cells: " + ", ".join(f"{v} {k}" for k, v in counts.items()) + ". "
    left = cells[~cells["analysed"]]
    if len(left):
        text += "Not analysed (unfinished; rerun `ldct-bench analyze --partial` to include partial cells): "
        text += ", ".join(f"`{c}` ({s})" for c, s in zip(left["cell"], left["status"])) + "."
    return text


def _conventions(settings: dict, matrix, with_input: bool = True) -> str:
    from benchmark.conventions import parse_window

    win = parse_window(settings.get("window", "abdomen"))
    ssim = metric_info("ssim").summary if "ssim" in settings.get("metrics", []) else ""
    unit = settings.get("unit", "patient")
    unit_text = ("the patient: per-patient means over that patient's evaluation slices" if unit == "patient"
                 else "the slice (slices of one patient are not independent: read p-values as optimistic)")  # fmt: skip
    family = {"metric": "all loss pairs × architectures × doses of one metric and one test",
              "condition": "the loss pairs of one metric × architecture × dose and one test",
              "all": "every pairwise test of one kind in the file"}[settings.get("family", "metric")]  # fmt: skip
    lines = [
        f"- **Window**: metrics and images use [{win.lo:g}, {win.hi:g}] HU (level {win.level:g}, width {win.width:g}): "
        "HU clipped to the window and scaled to [0, 1], data range 1. `rmse_hu` is computed on raw HU (no clipping).",
        f"- **SSIM**: {ssim or 'not scored'}.",
        f"- **Evaluation**: split `{settings.get('split', '')}`, {settings.get('images_per_dose', '?')} images per dose, "
        f"{_every(int(settings.get('every', 1)))}.",
        f"- **Epoch compared**: `{settings.get('epoch', 'final')}` "
        "(`final`: last scored epoch of each cell; `best_val`: the scored epoch with the lowest validation loss).",
        f"- **Unit of analysis**: {unit_text}. Seeds are averaged per image before anything else.",
        "- **Tests**: two-sided Wilcoxon signed-rank (scipy defaults) and paired t-test on the units; effect sizes "
        "matched-pairs rank-biserial r (Wilcoxon) and Cohen's d_z (t), differences loss_a − loss_b, "
        f"{settings.get('n_resamples', 2000)} bootstrap resamples for 95 % CIs.",
        f"- **Multiple comparisons**: Holm and Benjamini–Hochberg (statsmodels) over a family = {family}. "
        "With ≥ 3 losses: Friedman test (effect size Kendall's W) and Nemenyi post-hoc (its own FWER control).",
        "- **Correlations**: per cell, Spearman ρ between the loss (train/val, history.csv) and the metric's per-epoch "
        "mean over images; pooled per loss with repeated-measures correlation (pingouin `rm_corr`, cell = subject); "
        "across cells of a loss × dose at the final epoch. `agreement` = ρ for lower-is-better metrics, −ρ otherwise "
        "(> 0: the metric improves as the loss falls).",
        "- **LDCT input**: the last row of the metric and RMSE tables, and the dashed grey line in the trajectory "
        "figures, is the low-dose input itself scored against the reference (no denoising): same metrics, window "
        "and images (`input_baseline.parquet`). It repeats in every architecture column, is never bold, carries "
        "no significance marker and is left out of the tests and correlations.",
    ]
    if not with_input:
        lines.pop()
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
    import importlib.metadata as md

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
    "cd": "Critical-difference diagram (Demšar 2006): mean ranks, bars join losses not significantly different.",
}


def write_report(out: Path | str, score: ScoreOptions | None = None, stats: StatsOptions | None = None,
                 opts: ReportOptions | None = None) -> Path:  # fmt: skip
    """Tables, figures and ``report.md`` (running :func:`analyze_run` first unless ``skip_analyze``)."""
    out = Path(out)
    stats = (stats or StatsOptions()).check()
    opts = opts or ReportOptions()
    res = load_analysis(out, stats) if opts.skip_analyze else analyze_run(out, score, stats)
    adir = analysis_dir(out)
    matrix = _matrix(out)
    orders = Orders.from_traj(res.trajectories, matrix)
    unit_note = "per-patient means" if res.settings.get("unit", stats.unit) == "patient" else "slices"
    inputs = load_input_baseline(out)
    tables = build_tables(res.trajectories, res.significance, res.correlations, orders=orders,
                          baseline=opts.baseline, epoch=res.settings.get("epoch", stats.epoch), unit_note=unit_note,
                          inputs=inputs)  # fmt: skip
    table_paths = write_tables(tables, adir / "tables")
    window = res.settings.get("window", "abdomen")
    figs = build_figures(res.trajectories, res.correlations, res.ranks, orders, adir / "figures",
                         examples_dir=adir / EXAMPLES_DIR, window=window, epoch=res.settings.get("epoch", stats.epoch),
                         distortion=opts.distortion, perception=opts.perception, inputs=inputs)  # fmt: skip
    unavailable = pd.read_csv(adir / UNAVAILABLE) if (adir / UNAVAILABLE).is_file() else pd.DataFrame()
    metrics = [m for m in dict.fromkeys(res.trajectories.loc[res.trajectories["source"] == "metric", "metric"])]
    parts = [
        f"# ldct-bench report: {matrix.name if matrix is not None else out.name}\n",
        f"Run folder `{out}`; written {datetime.now(UTC).isoformat(timespec='seconds')} with {_versions()}.\n",
        _cells_section(adir) + "\n",
        "## Conventions\n", _conventions(res.settings, matrix, with_input=len(inputs) > 0) + "\n",
        "## Metrics\n", _md_table(_metric_rows(metrics)) + "\n",
        "### Unavailable metrics\n",
        (_md_table(unavailable) if len(unavailable) else "All requested metrics were computed.") + "\n",
        "## Tables\n",
        "Each table is also available as CSV (numbers) and LaTeX (booktabs): "
        + ", ".join(f"`{n}` ([csv](tables/{n}.csv), [tex](tables/{n}.tex))" for n in table_paths) + ".\n",
    ]  # fmt: skip
    parts += [t.markdown() for t in tables]
    parts += ["## Significance\n",
              "Full results: [significance.csv](significance.csv) (pairwise tests, Friedman, Nemenyi) and "
              "[friedman_ranks.csv](friedman_ranks.csv). Counts of pairwise comparisons:\n",
              _md_table(_significance_summary(res.significance)) + "\n",
              small_n_warning(res.significance),
              "## Loss–metric correlations\n",
              "Full results: [correlations.csv](correlations.csv) (scopes `cell`, `pooled`, `final`).\n",
              "## Figures\n"]  # fmt: skip
    for name, paths in figs.items():
        if paths:
            parts.append(f"### {name.replace('_', ' ')}\n")
            parts.append(_figure_md(name, paths, adir, FIGURE_CAPTIONS.get(name, "")))
    path = adir / REPORT
    path.write_text("\n".join(parts))
    return path

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
from analysis.figures import build_figures
from analysis.pipeline import StatsOptions, analyze_run, load_analysis
from analysis.schema import SOURCE_METRIC, metric_info
from analysis.scoring import ScoreOptions, load_input_baseline
from analysis.tables import Orders, build_tables, write_tables
from benchmark.config import MatrixConfig
from benchmark.core.conventions import parse_window
from benchmark.core.io import atomic_write_text
from benchmark.layout import (
    CELLS_CSV,
    CLAIMS_CSV,
    CORRELATIONS,
    RANKS,
    REPORT,
    SIGNIFICANCE,
    TABLES,
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
    tables = build_tables(res.trajectories, res.significance, res.correlations, orders=orders,
                          baseline=opts.baseline, epoch=res.settings.get("epoch", stats.epoch), unit_note=unit_note,
                          inputs=inputs)  # fmt: skip
    table_paths = write_tables(tables, layout.tables_dir)
    window = res.settings.get("window", "abdomen")
    figs = build_figures(res.trajectories, res.correlations, res.ranks, orders, layout.figures_dir,
                         examples_dir=layout.examples_dir, window=window, epoch=res.settings.get("epoch", stats.epoch),
                         distortion=opts.distortion, perception=opts.perception, inputs=inputs)  # fmt: skip
    path = layout.analysis_file(UNAVAILABLE)
    unavailable = pd.read_csv(path) if path.is_file() else pd.DataFrame()
    metrics = [m for m in dict.fromkeys(res.trajectories.loc[res.trajectories["source"] == SOURCE_METRIC, "metric"])]
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
              "## Figures\n"]  # fmt: skip
    for name, paths in figs.items():
        if paths:
            parts.append(f"### {name.replace('_', ' ')}\n")
            parts.append(_figure_md(name, paths, layout.analysis_dir, FIGURE_CAPTIONS.get(name, "")))
    path = layout.analysis_file(REPORT)
    atomic_write_text(path, "\n".join(parts))
    return path

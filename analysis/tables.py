"""Paper tables in CSV, Markdown and LaTeX (``<out>/analysis/tables/``).

* ``metric_<name>``: per metric, rows = loss, columns = architecture × dose, cells ``mean ± sd`` over the
  evaluation images at the selected epoch (seeds averaged per image first). The best mean per column is
  bold (direction from the metric's ``higher_is_better``; nothing bold for a metric without a better
  direction, ``ranked`` False, e.g. the NPS frequencies, marked ``↕``); ``*``/``**`` mark a loss that differs from the
  baseline loss (default: the matrix's first loss) at Holm-adjusted p < 0.05 / 0.01 in the two-sided
  Wilcoxon signed-rank test of :mod:`analysis.significance` (unit and family as in ``significance.csv``).
* ``rmse_hu_per_dose``: the RED-CNN-study layout (Chen et al., IEEE TMI 2017, Table I): rows = loss ×
  architecture, columns = dose/view conditions, RMSE in HU (mean ± sd), best per column bold. The metric
  is the one whose metadata says ``unit == "HU"``.
* ``seed_spread`` (runs with two or more seeds per cell): rows = loss × architecture, columns = metric ×
  dose, each seed's mean over the images, then mean ± sd over the seeds and the coefficient of variation.
* ``detectability_<object>`` and ``ttf_f50_f10`` (matrices with ``evaluation.task``,
  ``analysis/detectability.parquet``): per dose, the denoisers' d′ (held-out, leading observer) and AUC per
  insert with the dose-equivalent, then the LDCT input and NDCT rows; the TTF's f50 / f10 per rod.
* ``correlation_spearman``: rows = loss, columns = metric × {train, val} loss, the mean ± sd over cells of
  the per-cell Spearman ρ between the loss and the metric over epochs; ``correlation_rmcorr``: the
  repeated-measures r over all cells of a loss with its 95 % CI. Arrows give each metric's direction
  (↑ higher is better): ρ < 0 for an ↑ metric, ρ > 0 for a ↓ metric, means the metric improves as the
  loss falls.

The metric tables and the RMSE-per-dose table end with a reference row :data:`INPUT_LABEL` ("LDCT input"):
the low-dose input itself scored against the reference (no denoising; ``analysis/input_baseline.parquet``),
mean ± sd over the same evaluation images, in the same window and format, so one sees at a glance whether a
loss improves on doing nothing (the RED-CNN paper's tables have such an "LDCT" row). The input does not
depend on the architecture, so its value repeats in every architecture column; it is never bold and never
carries a significance marker (the tests compare trained losses only). In the CSV it is the rows with
``loss == "LDCT input"`` and ``architecture ==`` :data:`NO_ARCHITECTURE` (``"—"``), one per dose, with
``best`` False and an empty ``p_holm_vs_baseline``; the columns are unchanged.

A warm start's shared start (``init_from``, :func:`benchmark.cells.shared_starts`: the L1 pre-training of
an adversarial fine-tune, say) is a cell like any other and keeps its own row, labelled as such in the
Markdown and LaTeX tables: ``l1_pretrain (shared start of 0.95mse+0.05wgan_gp)`` (an architecture
likewise in the columns); the CSV numbers keep the plain labels.

The CSV files hold the numbers (long format); Markdown uses ``DataFrame.to_markdown`` (tabulate), LaTeX
``DataFrame.to_latex`` (booktabs rules — ``\\usepackage{booktabs}`` — underscores and other specials escaped,
Unicode symbols written as math).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.detectability import (
    NDCT_CONDITION,
    SOURCE_INPUT,
    SOURCE_MODEL,
    SOURCE_NDCT,
    primary_observer,
    summarise,
    with_dose_equivalent,
)
from analysis.schema import (
    INPUT_LABEL,
    higher_is_better_map,
    level_order,
    metric_info,
    metric_rows,
    select_epoch,
)
from benchmark.cells import shared_start_label, shared_starts
from benchmark.config import MatrixConfig
from benchmark.core.errors import UserError
from benchmark.core.io import atomic_write_text

NO_ARCHITECTURE = "—"  # the architecture of the LDCT-input reference row (it has none)
INPUT_NOTE = f"Last row, {INPUT_LABEL}: the low-dose input scored as is (no denoising); not ranked, not tested."

_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "_": r"\_", "%": r"\%", "&": r"\&", "#": r"\#", "$": r"\$",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}  # fmt: skip


_LATEX_UNICODE = {"±": r"$\pm$", "↑": r"$\uparrow$", "↓": r"$\downarrow$", "↕": r"$\updownarrow$", "·": r"$\cdot$", "ρ": r"$\rho$",
                  "–": "--", "—": "---", "−": "-", "≥": r"$\geq$", "×": r"$\times$"}  # fmt: skip


def latex_escape(text: str) -> str:
    """Escape LaTeX specials (``_`` in loss names like ``0.95mse+0.05wgan_gp``) and write the Unicode
    symbols of the Markdown tables as math, so the table compiles with plain pdflatex + booktabs."""
    return "".join(_LATEX_SPECIAL.get(ch, _LATEX_UNICODE.get(ch, ch)) for ch in str(text))


def md_escape(text: str) -> str:
    """Escape Markdown emphasis characters (the significance markers ``*``/``**``)."""
    return str(text).replace("*", "\\*")


def decimals_for(sd: Sequence[float] | np.ndarray, *, max_decimals: int = 4) -> int:
    """Decimals that show two significant digits of the typical (median) sd: 0.0123 → 3, 1.5 → 1, 25 → 0."""
    arr = np.asarray(sd, dtype=float)
    arr = np.abs(arr[np.isfinite(arr) & (arr != 0)])
    if not arr.size:
        return 2
    return int(np.clip(1 - math.floor(math.log10(float(np.median(arr)))), 0, max_decimals))


def arrow(metric: str) -> str:
    """The metric name with its direction: ``psnr ↑`` / ``niqe ↓`` (from the metadata)."""
    return f"{metric} {metric_info(metric).direction}"


@dataclass
class Table:
    """A table to render: ``text`` (strings), ``bold`` (bools, same shape), ``marker`` (superscripts),
    a caption, a footnote and the long-format numbers for the CSV."""

    name: str
    text: pd.DataFrame
    bold: pd.DataFrame
    marker: pd.DataFrame
    caption: str
    note: str
    numbers: pd.DataFrame

    def markdown(self) -> str:
        cells = self.text.copy().astype(object)
        for r in range(cells.shape[0]):
            for c in range(cells.shape[1]):
                v = str(cells.iat[r, c])
                v = f"**{v}**" if self.bold.iat[r, c] else v
                cells.iat[r, c] = v + md_escape(self.marker.iat[r, c] or "")
        cells.columns = [" · ".join(map(str, c)) if isinstance(c, tuple) else str(c) for c in cells.columns]
        cells.index = [" · ".join(map(str, i)) if isinstance(i, tuple) else str(i) for i in cells.index]
        body = cells.to_markdown(stralign="right")
        return f"**{self.caption}**\n\n{body}\n\n{md_escape(self.note)}\n"

    def latex(self) -> str:
        cells = self.text.copy().astype(object)
        for r in range(cells.shape[0]):
            for c in range(cells.shape[1]):
                v = latex_escape(str(cells.iat[r, c]))
                v = rf"\textbf{{{v}}}" if self.bold.iat[r, c] else v
                m = self.marker.iat[r, c]
                cells.iat[r, c] = v + (f"$^{{{m}}}$" if m else "")
        cells = cells.rename(index=latex_escape, columns=latex_escape)
        cells.index.names = [latex_escape(n) if n else n for n in cells.index.names]
        cells.columns.names = [latex_escape(n) if n else n for n in cells.columns.names]
        caption = latex_escape(self.caption) + " " + latex_escape(self.note)
        return cells.to_latex(escape=False, caption=caption, label=f"tab:{self.name}", multicolumn_format="c",
                              multirow=False, position="htbp")  # fmt: skip

    def write(self, folder: Path) -> list[Path]:
        paths = [folder / f"{self.name}.{ext}" for ext in ("csv", "md", "tex")]
        for path, text in zip(paths, (self.numbers.to_csv(index=False), self.markdown(), self.latex())):
            atomic_write_text(path, text)
        return paths


# ------------------------------------------------------------------------------------------ metrics


def image_means(traj: pd.DataFrame, epoch: str = "final") -> pd.DataFrame:
    """Per metric × loss × architecture × dose × image at the selected epoch, seeds averaged."""
    rows = select_epoch(metric_rows(traj), epoch, history=traj)
    keys = ["metric", "loss", "architecture", "dose", "patient", "image"]
    return rows.groupby(keys, observed=True, sort=False)["value"].mean().reset_index()


def summary_stats(traj: pd.DataFrame, epoch: str = "final") -> pd.DataFrame:
    """``metric, loss, architecture, dose, mean, sd, n`` over images (seeds averaged per image)."""
    per_image = image_means(traj, epoch)
    g = per_image.groupby(["metric", "loss", "architecture", "dose"], observed=True, sort=False)["value"]
    return g.agg(mean="mean", sd="std", n="count").reset_index()


def seed_stats(traj: pd.DataFrame, epoch: str = "final") -> pd.DataFrame:
    """``metric, loss, architecture, dose, mean, sd, n_seeds, cv``: each seed's mean over the evaluation
    images at the selected epoch, then the mean and sample sd of those over the seeds (``cv`` = sd / |mean|).
    The seed-to-seed spread of a cell: how far a result moves when only the seed changes."""
    rows = select_epoch(metric_rows(traj), epoch, history=traj)
    keys = ["metric", "loss", "architecture", "dose"]
    per_seed = rows.groupby([*keys, "seed"], observed=True, sort=False)["value"].mean().reset_index()
    g = per_seed.groupby(keys, observed=True, sort=False)["value"]
    out = g.agg(mean="mean", sd="std", n_seeds="count").reset_index()
    return out.assign(cv=out["sd"] / out["mean"].abs())


def seed_spread_table(traj: pd.DataFrame, orders: Orders, epoch: str = "final",
                      metrics: Sequence[str] | None = None) -> Table | None:  # fmt: skip
    """``seed_spread``: rows loss · architecture, columns metric · dose, ``mean ± sd (cv %)`` over seeds
    (:func:`seed_stats`), the metrics in the order of ``metrics`` (None: as they appear at the epoch);
    None unless some cell has two or more seeds."""
    s = seed_stats(traj, epoch)
    if s.empty or int(s["n_seeds"].max()) < 2:
        return None
    metrics = list(metrics) if metrics is not None else list(dict.fromkeys(s["metric"].astype(str)))
    rows = list(_idx([orders.losses, orders.architectures]))
    cols = list(_idx([metrics, orders.doses]))
    text = pd.DataFrame("–", index=pd.MultiIndex.from_tuples(rows, names=["loss", "architecture"]),
                        columns=pd.MultiIndex.from_tuples(cols))  # fmt: skip
    dec = {m: decimals_for(s.loc[s["metric"] == m, "sd"].to_numpy()) for m in metrics}
    for r in s.itertuples():
        if (r.loss, r.architecture) in text.index and (r.metric, r.dose) in text.columns:
            d = dec[str(r.metric)]
            text.loc[(r.loss, r.architecture), (r.metric, r.dose)] = f"{r.mean:.{d}f} ± {r.sd:.{d}f} ({100 * r.cv:.1f} %)"
    text.columns = pd.MultiIndex.from_tuples([(arrow(m), d) for m, d in text.columns])
    text.index = pd.MultiIndex.from_tuples(orders.row_labels(text.index), names=["loss", "architecture"])
    return Table(
        "seed_spread", text, pd.DataFrame(False, index=text.index, columns=text.columns),
        pd.DataFrame("", index=text.index, columns=text.columns),
        caption="Seed-to-seed spread: each seed's mean over the evaluation images, then mean ± sample sd over "
                "the seeds, and the coefficient of variation sd / |mean|.",
        note=f"{int(s['n_seeds'].min())}-{int(s['n_seeds'].max())} seeds per cell; epoch: {epoch}.",
        numbers=s,
    )  # fmt: skip


def input_stats(inputs: pd.DataFrame | None) -> pd.DataFrame:
    """``metric, dose, mean, sd, n`` of the LDCT-input baseline (``analysis/input_baseline.parquet``) over
    its images — the same images as :func:`summary_stats`, one value per image (no seeds)."""
    if inputs is None or inputs.empty:
        return pd.DataFrame(columns=["metric", "dose", "mean", "sd", "n"])
    g = inputs.groupby(["metric", "dose"], observed=True, sort=False)["value"]
    return g.agg(mean="mean", sd="std", n="count").reset_index()


def _marker(p: float) -> str:
    if not np.isfinite(p):
        return ""
    return "**" if p < 0.01 else "*" if p < 0.05 else ""


def baseline_p(sig: pd.DataFrame | None, metric: str, baseline: str, test: str = "wilcoxon") -> dict[tuple, float]:
    """``(loss, architecture, dose) -> Holm-adjusted p`` of each loss against ``baseline``."""
    if sig is None or sig.empty:
        return {}
    s = sig[(sig["metric"] == metric) & (sig["test"] == test)
            & ((sig["loss_a"] == baseline) | (sig["loss_b"] == baseline))]  # fmt: skip
    out = {}
    for _, r in s.iterrows():
        other = r["loss_b"] if r["loss_a"] == baseline else r["loss_a"]
        out[(other, str(r["architecture"]), str(r["dose"]))] = float(r["p_holm"])
    return out


@dataclass
class Orders:
    """Display order of the levels (the matrix's order; order of appearance otherwise)."""

    losses: list[str]
    architectures: list[str]
    doses: list[str]
    # warm starts: {"loss" | "architecture": {label of a shared start: [labels starting from it]}}
    starts: dict[str, dict[str, list[str]]] = field(default_factory=dict)

    @classmethod
    def from_traj(cls, traj: pd.DataFrame, matrix: MatrixConfig | None = None) -> Orders:
        pref = ([x.label for x in matrix.losses], [a.label for a in matrix.architectures], list(matrix.doses)) \
            if matrix is not None else (None, None, None)  # fmt: skip
        return cls(level_order(traj, "loss", pref[0]), level_order(traj, "architecture", pref[1]),
                   level_order(traj, "dose", pref[2]), shared_starts(matrix) if matrix is not None else {})  # fmt: skip

    def loss_label(self, loss: str, *, wrap: bool = False) -> str:
        """How tables and figures show a loss: a shared start says so (:func:`benchmark.cells.shared_start_label`);
        ``wrap``: its "(shared start of …)" on a second line, for figure legends."""
        dependents = self.starts.get("loss", {}).get(loss)
        label = shared_start_label(loss, dependents) if dependents else loss
        return label.replace(" (", "\n(", 1) if wrap else label

    def architecture_label(self, architecture: str) -> str:
        dependents = self.starts.get("architecture", {}).get(architecture)
        return shared_start_label(architecture, dependents) if dependents else architecture

    def row_labels(self, index: pd.Index) -> list[object]:
        """A table's row labels shown: a loss, or ``(loss, architecture)``, with its shared starts labelled."""
        return [(self.loss_label(x[0]), self.architecture_label(x[1])) if isinstance(x, tuple) else self.loss_label(x)
                for x in index]  # fmt: skip


def _mean_sd_table(stats: pd.DataFrame, rows: list[str], cols: list[str], row_order: list, col_order: list,
                   higher: bool | None, reference: tuple[object, pd.DataFrame] | None = None,
                   ) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, pd.DataFrame]:  # fmt: skip
    """Wide ``mean``/``sd`` tables, their ``mean ± sd`` text and the bold-best mask (per column).
    ``reference = (row label, stats with the ``cols`` columns)`` appends a last row that is never bold
    (the LDCT input); the decimals come from the other rows. ``higher`` None: a metric without a better
    direction (``MetricInfo.ranked`` False), nothing bold."""
    mean = stats.pivot_table(index=rows, columns=cols, values="mean", aggfunc="first", observed=True)
    sd = stats.pivot_table(index=rows, columns=cols, values="sd", aggfunc="first", observed=True)
    mean = mean.reindex(index=row_order, columns=col_order)
    sd = sd.reindex(index=row_order, columns=col_order)
    dec = decimals_for(sd.to_numpy().ravel())
    best = mean.max() if higher else mean.min()
    bold = mean.eq(best, axis=1) & mean.notna() & (higher is not None)
    if reference is not None:
        label, ref = reference
        index = pd.MultiIndex.from_tuples([label]) if isinstance(label, tuple) else pd.Index([label])
        ref = ref.set_index(cols).reindex(col_order)
        mean, sd = (pd.concat([w, pd.DataFrame([ref[v].to_numpy()], index=index, columns=w.columns)])
                    for w, v in ((mean, "mean"), (sd, "sd")))  # fmt: skip
        bold = pd.concat([bold, pd.DataFrame(False, index=index, columns=bold.columns)])
    text = mean.combine(sd, lambda m, s: pd.Series(
        [f"{a:.{dec}f} ± {b:.{dec}f}" if np.isfinite(a) and np.isfinite(b) else (f"{a:.{dec}f}" if np.isfinite(a) else "–")
         for a, b in zip(m, s)], index=m.index))  # fmt: skip
    return mean, sd, text, bold


def _input_rows(inputs: pd.DataFrame, metric: str, architectures: Sequence[str] | None = None) -> pd.DataFrame | None:
    """The LDCT-input stats of ``metric`` (columns ``dose, mean, sd, n``), repeated for each of
    ``architectures`` when given (column ``architecture``); None when there are none."""
    rows = inputs[inputs["metric"] == metric]
    if rows.empty:
        return None
    if architectures is not None:
        rows = rows.merge(pd.DataFrame({"architecture": list(architectures)}), how="cross")
    return rows


def _input_numbers(inputs: pd.DataFrame, metric: str, like: pd.DataFrame, **extra: object) -> pd.DataFrame:
    """``like`` (a table's CSV numbers) with the LDCT-input rows of ``metric`` appended: ``loss`` =
    :data:`INPUT_LABEL`, ``architecture`` = :data:`NO_ARCHITECTURE`, one row per dose; the same columns."""
    rows = _input_rows(inputs, metric)
    if rows is None:
        return like
    rows = rows.assign(loss=INPUT_LABEL, architecture=NO_ARCHITECTURE, **extra)
    return pd.concat([like, rows.reindex(columns=like.columns)], ignore_index=True)


def _idx(levels: list[list[str]]) -> pd.Index:
    return pd.MultiIndex.from_product(levels) if len(levels) > 1 else pd.Index(levels[0])


def metric_table(
    stats: pd.DataFrame, sig: pd.DataFrame | None, metric: str, orders: Orders, *, baseline: str | None = None,
    unit_note: str = "per-patient means", inputs: pd.DataFrame | None = None,
) -> Table:  # fmt: skip
    """The ``metric_<name>`` table (see the module docstring); ``inputs``: :func:`input_stats` rows for
    the LDCT-input reference row (none when None or without this metric)."""
    higher = higher_is_better_map([metric])[metric] if metric_info(metric).ranked else None
    s = stats[stats["metric"] == metric]
    base = baseline or orders.losses[0]
    cols = _idx([orders.architectures, orders.doses])
    ref = _input_rows(input_stats(None) if inputs is None else inputs, metric, orders.architectures)
    mean, _, text, bold = _mean_sd_table(s, ["loss"], ["architecture", "dose"], orders.losses, list(cols), higher,
                                         None if ref is None else (INPUT_LABEL, ref))  # fmt: skip
    pvals = baseline_p(sig, metric, base)
    marker = pd.DataFrame("", index=text.index, columns=text.columns)
    for loss in orders.losses:  # the LDCT-input row is never tested
        for arch, dose in text.columns:
            marker.loc[loss, (arch, dose)] = _marker(pvals.get((loss, arch, dose), np.nan))
    text.index = [f"{orders.loss_label(x)} (baseline)" if x == base else orders.loss_label(x) for x in text.index]
    bold.index = marker.index = text.index
    info = metric_info(metric)
    unit = f" [{info.unit}]" if info.unit else ""
    numbers = s.assign(best=[bool(bold.iloc[list(mean.index).index(r.loss)][(r.architecture, r.dose)])
                             for r in s.itertuples()],
                       p_holm_vs_baseline=[pvals.get((r.loss, r.architecture, r.dose), np.nan) for r in s.itertuples()],
                       baseline=base)  # fmt: skip
    if inputs is not None:
        numbers = _input_numbers(inputs, metric, numbers, best=False, p_holm_vs_baseline=np.nan, baseline=base)
    text.columns = bold.columns = marker.columns = pd.MultiIndex.from_tuples(
        [(orders.architecture_label(a), d) for a, d in text.columns], names=text.columns.names)
    return Table(
        name=f"metric_{metric}",
        text=text, bold=bold, marker=marker,
        caption=f"{arrow(metric)}{unit}: mean ± sd over the evaluation images (seeds averaged); "
                f"columns architecture · dose; "
                + ("best per column in bold." if higher is not None else "no better direction (↕): nothing bold."),
        note=f"* / **: differs from the baseline {base} at Holm-adjusted p < 0.05 / 0.01 (two-sided Wilcoxon "
             f"signed-rank test on {unit_note})." + (f" {INPUT_NOTE}" if ref is not None else ""),
        numbers=numbers,
    )  # fmt: skip


def hu_metric(metrics: Sequence[str]) -> str | None:
    """The first metric whose metadata unit is HU (RMSE in HU; not the NPS noise magnitude), or None."""
    return next((m for m in metrics if metric_info(m).unit == "HU" and not metric_info(m).regions), None)


def rmse_per_dose_table(stats: pd.DataFrame, orders: Orders, metric: str, inputs: pd.DataFrame | None = None) -> Table:
    """The RED-CNN-style table: rows loss × architecture, columns dose conditions, RMSE in HU; last row
    the LDCT input (``inputs``: :func:`input_stats` rows), like the paper's "LDCT" row."""
    s = stats[stats["metric"] == metric]
    present = set(zip(s["loss"], s["architecture"]))  # a loss × architecture the matrix excludes has no row
    rows = [r for r in _idx([orders.losses, orders.architectures]) if r in present]
    ref = _input_rows(input_stats(None) if inputs is None else inputs, metric)
    _, _, text, bold = _mean_sd_table(s, ["loss", "architecture"], ["dose"], rows, orders.doses,
                                      higher_is_better_map([metric])[metric],
                                      None if ref is None else ((INPUT_LABEL, NO_ARCHITECTURE), ref))  # fmt: skip
    text.index = bold.index = pd.MultiIndex.from_tuples(orders.row_labels(text.index), names=text.index.names)
    marker = pd.DataFrame("", index=text.index, columns=text.columns)
    text.columns.name = bold.columns.name = marker.columns.name = "dose"
    return Table(
        name=f"{metric}_per_dose", text=text, bold=bold, marker=marker,
        caption=f"{arrow(metric)} [HU] per dose condition: mean ± sd over the evaluation images, rows loss · "
                "architecture; lowest per column in bold (layout of Chen et al., RED-CNN, IEEE TMI 2017).",
        note="RMSE on the raw HU images (no window clipping)." + (f" {INPUT_NOTE}" if ref is not None else ""),
        numbers=s.copy() if inputs is None else _input_numbers(inputs, metric, s),
    )  # fmt: skip


# ------------------------------------------------------------------------------ task-based image quality

NDCT_LABEL = "NDCT reference"


def _task_row_label(orders: Orders, source: str, dose: str, loss: str, architecture: str) -> tuple[str, str, str]:
    if source == SOURCE_INPUT:
        return dose, INPUT_LABEL, NO_ARCHITECTURE
    if source == SOURCE_NDCT:
        return dose, f"{NDCT_LABEL} ({NDCT_CONDITION})", NO_ARCHITECTURE
    return dose, orders.loss_label(loss), orders.architecture_label(architecture)


def _task_blocks(model: pd.DataFrame, refs: pd.DataFrame, orders: Orders) -> list[tuple[str, str, str, str]]:
    """``(source, dose, loss, architecture)`` of the table's rows: per dose, the losses × architectures in
    the matrix's order, then the LDCT input at that dose, then the NDCT reference."""
    rows = []
    for dose in orders.doses:
        present = set(zip(model.loc[model["dose"] == dose, "loss"], model.loc[model["dose"] == dose, "architecture"]))
        rows += [(SOURCE_MODEL, dose, x, a) for x in orders.losses for a in orders.architectures if (x, a) in present]
        if ((refs["source"] == SOURCE_INPUT) & (refs["condition"] == dose)).any():
            rows.append((SOURCE_INPUT, dose, "", ""))
        if (refs["source"] == SOURCE_NDCT).any():
            rows.append((SOURCE_NDCT, dose, "", ""))
    return rows


def _pick(df: pd.DataFrame, source: str, dose: str, loss: str, arch: str) -> pd.DataFrame:
    if source == SOURCE_MODEL:
        return df[(df["source"] == source) & (df["dose"] == dose) & (df["loss"] == loss) & (df["architecture"] == arch)]
    if source == SOURCE_INPUT:
        return df[(df["source"] == source) & (df["condition"] == dose)]
    return df[df["source"] == source]


def detectability_tables(det: pd.DataFrame, orders: Orders, observers: Sequence[str]) -> list[Table]:
    """``detectability_<object>`` per detection object: rows dose · loss · architecture, then the LDCT input
    at that dose and the NDCT reference; columns insert × (d′ of the leading observer, held-out, ± sd;
    its AUC with the 95 % bootstrap interval; the dose-equivalent: the dose at which the unprocessed input
    reaches the same d′, :func:`analysis.detectability.with_dose_equivalent`). Highest d′ per dose and
    insert among the denoisers in bold."""
    obs = primary_observer(observers)
    dprime = with_dose_equivalent(summarise(det, obs, "dprime_heldout"))
    auc = summarise(det, obs, "auc")
    tables = []
    for obj in dict.fromkeys(dprime["object"]):
        d, a = dprime[dprime["object"] == obj], auc[auc["object"] == obj]
        inserts = list(dict.fromkeys(d["insert"]))
        blocks = _task_blocks(d[d["source"] == SOURCE_MODEL], d[d["source"] != SOURCE_MODEL], orders)
        index = pd.MultiIndex.from_tuples([_task_row_label(orders, *b) for b in blocks], names=["dose", "loss", "architecture"])
        columns = pd.MultiIndex.from_tuples([(i, q) for i in inserts for q in ("d′", "AUC", "dose-eq.")])
        text = pd.DataFrame("–", index=index, columns=columns)
        bold = pd.DataFrame(False, index=index, columns=columns)
        numbers = []
        dec = decimals_for(d["sd"].to_numpy())
        for k, block in enumerate(blocks):
            for ins in inserts:
                rd, ra = _pick(d, *block), _pick(a, *block)
                rd, ra = rd[rd["insert"] == ins], ra[ra["insert"] == ins]
                if rd.empty:
                    continue
                r = rd.iloc[0]
                text.iat[k, columns.get_loc((ins, "d′"))] = f"{r['value']:.{dec}f} ± {r['sd']:.{dec}f}"
                if len(ra):
                    q = ra.iloc[0]
                    ci = f" [{q['ci_low']:.2f}, {q['ci_high']:.2f}]" if np.isfinite(q["ci_low"]) else ""
                    text.iat[k, columns.get_loc((ins, "AUC"))] = f"{q['value']:.2f}{ci}"
                if block[0] == SOURCE_MODEL:
                    text.iat[k, columns.get_loc((ins, "dose-eq."))] = r["dose_eq_text"]
                numbers.append({"object": obj, "insert": ins, "source": block[0], "dose": block[1],
                                "loss": block[2] or (INPUT_LABEL if block[0] == SOURCE_INPUT else NDCT_LABEL),
                                "architecture": block[3] or NO_ARCHITECTURE, "observer": obs, "dprime": r["value"],
                                "dprime_sd": r["sd"], "auc": ra.iloc[0]["value"] if len(ra) else np.nan,
                                "auc_ci_low": ra.iloc[0]["ci_low"] if len(ra) else np.nan,
                                "auc_ci_high": ra.iloc[0]["ci_high"] if len(ra) else np.nan,
                                "dose_equivalent": r["dose_eq"], "dose_equivalent_text": r["dose_eq_text"],
                                "n_seeds": r["n_seeds"], "n_per_class": r["n_per_class"]})  # fmt: skip
        nums = pd.DataFrame(numbers)
        for (dose, ins), g in nums[nums["source"] == SOURCE_MODEL].groupby(["dose", "insert"], sort=False):
            best = g["dprime"].max()
            for r in g[g["dprime"] == best].itertuples():
                k = blocks.index((SOURCE_MODEL, dose, r.loss, r.architecture))
                bold.iat[k, columns.get_loc((ins, "d′"))] = True
        n = int(nums["n_per_class"].max()) if len(nums) else 0
        tables.append(Table(
            f"detectability_{obj}", text, bold, pd.DataFrame("", index=index, columns=columns),
            caption=f"Task-based image quality, {obj}: d′ of the {obs} observer (held-out, mean ± sd over "
                    f"resplits; ± sd over seeds with several), its AUC [95 % bootstrap interval] and the "
                    f"dose-equivalent per insert, {n} signal-present + {n} signal-absent realisations per row; "
                    "highest d′ per dose and insert in bold.",
            note="dose-eq.: the dose (% per view, same views) at which the unprocessed LDCT input has the same d′, "
                 "interpolated in log dose between the input's measured doses (× the cell's own dose); "
                 f"'beyond the range' outside them. {INPUT_LABEL}: the realisations as simulated (no denoising); "
                 f"{NDCT_LABEL}: 100 % dose at 720 views.",
            numbers=nums,
        ))  # fmt: skip
    return tables


def ttf_table(det: pd.DataFrame, orders: Orders) -> Table | None:
    """``ttf_f50_f10``: rows dose · loss · architecture (+ input, NDCT), columns rod contrast × (f50, f10) in
    cycles/mm (TG-233 TTF of the mean of the realisations; seeds averaged); None without rods."""
    f50, f10 = summarise(det, "ttf", "f50"), summarise(det, "ttf", "f10")
    if f50.empty:
        return None
    rods = list(dict.fromkeys(f50["insert"]))
    blocks = _task_blocks(f50[f50["source"] == SOURCE_MODEL], f50[f50["source"] != SOURCE_MODEL], orders)
    index = pd.MultiIndex.from_tuples([_task_row_label(orders, *b) for b in blocks], names=["dose", "loss", "architecture"])
    columns = pd.MultiIndex.from_tuples([(r, q) for r in rods for q in ("f50", "f10")])
    text = pd.DataFrame("–", index=index, columns=columns)
    numbers = []
    for k, block in enumerate(blocks):
        for rod in rods:
            vals = {}
            for q, df in (("f50", f50), ("f10", f10)):
                sel = _pick(df, *block)
                sel = sel[sel["insert"] == rod]
                vals[q] = float(sel["value"].iloc[0]) if len(sel) else np.nan
                text.iat[k, columns.get_loc((rod, q))] = f"{vals[q]:.3f}" if np.isfinite(vals[q]) else "–"
            numbers.append({"rod": rod, "source": block[0], "dose": block[1], "loss": block[2], "architecture": block[3],
                            "f50": vals["f50"], "f10": vals["f10"]})  # fmt: skip
    return Table("ttf_f50_f10", text, pd.DataFrame(False, index=index, columns=columns),
                 pd.DataFrame("", index=index, columns=columns),
                 caption="Task transfer function (AAPM TG-233, rods of 25 mm): f50 and f10 in cycles/mm per rod contrast.",
                 note="TTF of the mean of the signal-present realisations (radial ESF, LSF, Hann window, |FFT|); "
                      "seeds averaged; – where the TTF does not fall that far.",
                 numbers=pd.DataFrame(numbers))  # fmt: skip


# ------------------------------------------------------------------------------------- correlations


def correlation_tables(corr: pd.DataFrame, orders: Orders, metrics: Sequence[str]) -> list[Table]:
    """``correlation_spearman`` and ``correlation_rmcorr`` (see the module docstring)."""
    tables = []
    cell = corr[corr["scope"] == "cell"]
    agg = cell.groupby(["loss", "metric", "against"], observed=True)["rho"].agg(mean="mean", sd="std", n="count")
    agg = agg.reset_index()
    cols = list(_idx([list(metrics), ["train_loss", "val_loss"]]))
    text = pd.DataFrame("–", index=orders.losses, columns=pd.MultiIndex.from_tuples(cols))
    for r in agg.itertuples():
        if (r.metric, r.against) in text.columns and r.loss in text.index:
            text.loc[r.loss, (r.metric, r.against)] = f"{r.mean:.2f}" + (f" ± {r.sd:.2f}" if np.isfinite(r.sd) else "")
    text.columns = pd.MultiIndex.from_tuples([(arrow(m), a) for m, a in text.columns])
    text.index = orders.row_labels(text.index)
    false = pd.DataFrame(False, index=text.index, columns=text.columns)
    empty = pd.DataFrame("", index=text.index, columns=text.columns)
    tables.append(Table(
        "correlation_spearman", text, false, empty,
        caption="Spearman ρ between the loss and the metric's per-epoch mean over epochs, mean ± sd over cells.",
        note="↑: higher is better, so ρ < 0 means the metric improves as the loss falls; ↓: ρ > 0 does.",
        numbers=agg,
    ))  # fmt: skip
    pooled = corr[corr["scope"] == "pooled"]
    text = pd.DataFrame("–", index=orders.losses, columns=pd.MultiIndex.from_tuples(cols))
    for r in pooled.itertuples():
        if (r.metric, r.against) in text.columns and r.loss in text.index and np.isfinite(r.rho):
            text.loc[r.loss, (r.metric, r.against)] = f"{r.rho:.2f} [{r.ci_low:.2f}, {r.ci_high:.2f}]"
    text.columns = pd.MultiIndex.from_tuples([(arrow(m), a) for m, a in text.columns])
    text.index = orders.row_labels(text.index)
    tables.append(Table(
        "correlation_rmcorr", text, false.reindex_like(text).fillna(False), empty.reindex_like(text).fillna(""),
        caption="Repeated-measures correlation (Bakdash & Marusich 2017) between the loss and the metric over "
                "all cells of a loss (cell = subject), with 95 % CI.",
        note="↑: higher is better, so r < 0 means the metric improves as the loss falls; ↓: r > 0 does.",
        numbers=pooled.copy(),
    ))  # fmt: skip
    return tables


def build_tables(
    traj: pd.DataFrame, sig: pd.DataFrame | None, corr: pd.DataFrame | None, *, orders: Orders,
    baseline: str | None = None, epoch: str = "final", unit_note: str = "per-patient means",
    inputs: pd.DataFrame | None = None, metrics: Sequence[str] | None = None,
) -> list[Table]:  # fmt: skip
    """Every table of the module docstring for ``metrics``, in that order (the scored metrics,
    :func:`analysis.schema.metric_names`; None: the metrics of ``traj`` at the compared epoch, in order of
    appearance); ``inputs`` is the LDCT-input baseline (:data:`analysis.schema.BASELINE_COLUMNS`, e.g. from
    ``load_input_baseline``) for the reference row (no row when None or empty)."""
    stats = summary_stats(traj, epoch)
    ref = input_stats(inputs) if inputs is not None and len(inputs) else None
    metrics = list(metrics) if metrics is not None else list(dict.fromkeys(stats["metric"].astype(str)))
    if baseline is not None and baseline not in orders.losses:
        raise UserError(f"{baseline!r} is not a loss of this run ({', '.join(orders.losses)})", field="baseline")
    tables = [metric_table(stats, sig, m, orders, baseline=baseline, unit_note=unit_note, inputs=ref) for m in metrics]
    hu = hu_metric(metrics)
    if hu is not None:
        tables.append(rmse_per_dose_table(stats, orders, hu, ref))
    if corr is not None and len(corr):
        tables += correlation_tables(corr, orders, metrics)
    spread = seed_spread_table(traj, orders, epoch, metrics)
    if spread is not None:
        tables.append(spread)
    return tables


def write_tables(tables: Sequence[Table], folder: Path) -> dict[str, list[Path]]:
    """Write each table as CSV, Markdown and LaTeX; returns ``name -> paths``."""
    return {t.name: t.write(folder) for t in tables}

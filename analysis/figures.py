"""Paper figures (seaborn/matplotlib, Agg backend), each written as PNG (150 dpi) and PDF to
``<out>/analysis/figures/``.

* ``training_loss``: training (solid) and validation (dashed) loss per epoch, one panel per loss (losses
  have different scales), one colour per architecture · dose, band = ±1 sd over seeds (when > 1). A log y
  axis, except in a panel whose loss takes a value ≤ 0 (an adversarial arm's total, e.g. a WGAN critic
  term): a log axis would drop those points and the band around them, so that panel is linear and says so.
* ``trajectories_full_reference`` / ``trajectories_no_reference``: each metric over epochs, one row of panels
  per metric (shared y axis) and one column per architecture · dose, one line per loss, band = ±1 sd over
  images and seeds (like the figures of the loss-analysis literature). Which metrics go where is read
  from the metadata. A dashed grey horizontal line per panel is the LDCT input's mean over the same
  images (the low-dose input scored as is, ``analysis/input_baseline.parquet``): a loss below it (above,
  for a lower-is-better metric) does worse than no denoising.
* ``correlation_heatmap``: mean over cells of the per-cell Spearman ρ (loss × metric), against the
  training and the validation loss; each metric's direction is in its label.
* ``perception_distortion``: the perception–distortion plane (Blau & Michaeli, CVPR 2018) at the selected
  epoch: a distortion metric (PSNR by default) against a no-reference metric (NIQE by default; the first
  available no-reference metric otherwise), one point per loss (mean ± sd over images).
* ``comparison_<architecture>_<dose>``: LDCT input, each loss's output and the reference (lowest seed, last
  epoch) in the metric window (default [−160, 240] HU) with a zoomed region below each (the square of
  a quarter of the image side with the most structure in the reference), RMSE in HU to the reference.
* ``nps_<dose>``: the radial noise power spectrum (ICRU Report 87; AAPM TG-233) of the residual
  (image − reference, HU) on the visual-comparison slice, in its uniform-region ROIs
  (:mod:`analysis.metrics.nps`): one curve per loss (lowest seed, last epoch), the LDCT input
  (input − reference) dashed grey, and, when the reference is noisy (``synth`` ``target: ndct``), the
  reference's own noise (reference − its noiseless FBP) dotted black; one panel per architecture, log y
  axis (HU²·mm²), x in mm⁻¹ from the first non-zero frequency up to the Nyquist frequency (the zero-
  frequency value is extrapolated from its neighbours, not measured, so it is not drawn).
* ``cd_<metric>``: critical-difference diagrams (Demšar 2006) per architecture · dose: mean ranks
  (1 = best) of the losses over the units; losses joined by a bar are not significantly different
  (Nemenyi, α = 0.05); the CD of Demšar's formula is given in each title.

* ``dprime_vs_dose_<object>``, ``ttf_<dose>``, ``psnr_rank_vs_dprime_rank`` (matrices with
  ``evaluation.task``): d′ against dose per loss with the LDCT input and NDCT lines, the TTF per rod
  contrast, and the distortion-rank against d′-rank agreement (:func:`task_figures`).

A warm start's shared start (``init_from``: the L1 pre-training of an adversarial fine-tune, say) is drawn
as its own loss, labelled ``<label> (shared start of <dependents>)`` (:meth:`analysis.tables.Orders.loss_label`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import numpy as np
import pandas as pd
import scikit_posthocs as sp
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle
from matplotlib.ticker import FuncFormatter, NullFormatter

from analysis.detectability import (
    SOURCE_INPUT,
    SOURCE_MODEL,
    SOURCE_NDCT,
    primary_observer,
    summarise,
    total_dose,
)
from analysis.metrics.nps import image_nps, reference_mask
from analysis.schema import INPUT_LABEL, history_rows, kind_map, metric_info, metric_rows, select_epoch
from analysis.tables import Orders
from benchmark.core.conventions import parse_window, window_to_unit
from benchmark.core.io import atomic_write
from benchmark.data.synth import parse_condition

DPI = 150
INPUT_COLOR, INPUT_WIDTH = "0.45", 1.2  # the LDCT-input reference line: dashed grey
INPUT_STYLE: Final = "--"


def _plt():
    """pyplot and seaborn, imported here so that the Agg backend is chosen before pyplot loads."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    sns.set_theme(context="paper", style="whitegrid", font_scale=1.1)
    return plt, sns


def save(fig, folder: Path, name: str) -> list[Path]:
    """Write ``name.png`` and ``name.pdf`` atomically; close the figure."""
    plt, _ = _plt()
    paths = [folder / f"{name}.png", folder / f"{name}.pdf"]
    atomic_write(paths[0], lambda tmp: fig.savefig(tmp, dpi=DPI, bbox_inches="tight"), suffix=".png")
    atomic_write(paths[1], lambda tmp: fig.savefig(tmp, bbox_inches="tight"), suffix=".pdf")
    plt.close(fig)
    return paths


def axis_label(metric: str) -> str:
    """``psnr [dB] ↑``: name, unit and direction from the metadata."""
    info = metric_info(metric)
    unit = f" [{info.unit}]" if info.unit else ""
    return f"{metric}{unit} {info.direction}"


def _condition(df: pd.DataFrame) -> pd.Series:
    return df["architecture"].astype(str) + " · " + df["dose"].astype(str)


def training_loss_figure(traj: pd.DataFrame, orders: Orders, folder: Path) -> list[Path]:
    """``training_loss`` (see the module docstring)."""
    plt, sns = _plt()
    hist = history_rows(traj)
    hist = hist[hist["metric"].isin(["train_loss", "val_loss"])].copy()
    if hist.empty:
        return []
    hist["split"] = hist["metric"].map({"train_loss": "training", "val_loss": "validation"})
    hist["condition"] = _condition(hist)
    conditions = [f"{a} · {d}" for a in orders.architectures for d in orders.doses if f"{a} · {d}" in set(hist["condition"])]
    losses = [x for x in orders.losses if x in set(hist["loss"])]
    n_seeds = int(hist.groupby(["loss", "architecture", "dose"], observed=True)["seed"].nunique().max())
    ncol = min(3, len(losses))
    nrow = int(np.ceil(len(losses) / ncol))
    fig, axes = plt.subplots(nrow, ncol, figsize=(4.2 * ncol, 3.2 * nrow), squeeze=False)
    for ax, loss in zip(axes.ravel(), losses):
        sub = hist[hist["loss"] == loss]
        sns.lineplot(data=sub, x="epoch", y="value", hue="condition", hue_order=conditions, style="split",
                     style_order=["training", "validation"], errorbar="sd", marker="o", markersize=4, ax=ax)  # fmt: skip
        positive = bool((sub["value"] > 0).all())
        ax.set_yscale("log" if positive else "linear")
        ax.set_title(f"loss: {orders.loss_label(loss)}" + ("" if positive else "\n(linear axis: values ≤ 0)"), fontsize=10)
        ax.set_xlabel("epoch")
        scale = "log scale" if positive else "linear scale"
        ax.set_ylabel(f"loss value (network units, {scale})" if ax is axes[0, 0] or ncol == 1 or not positive else "")
        ax.xaxis.get_major_locator().set_params(integer=True)
        handles, labels = ax.get_legend_handles_labels()
        ax.get_legend().remove()
    fig.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.0, 0.9), fontsize=8, frameon=False)
    for ax in axes.ravel()[len(losses):]:
        ax.set_visible(False)
    band = f"band: ±1 sd over {n_seeds} seeds" if n_seeds > 1 else "one seed"
    fig.suptitle(f"Training and validation loss per epoch ({band}; network normalisation (HU + 1024) / 4096)")
    fig.tight_layout()
    return save(fig, folder, "training_loss")


def trajectory_figure(traj: pd.DataFrame, orders: Orders, folder: Path, kind: str,
                      inputs: pd.DataFrame | None = None) -> list[Path]:  # fmt: skip
    """``trajectories_<kind>`` for ``kind`` in {full_reference, no_reference}; ``inputs``: the LDCT-input
    baseline (``dose, patient, image, metric, value``) for the dashed reference line (none when None).
    Nothing is drawn with fewer than 2 scored epochs (``evaluation.every`` ≥ the epochs: a single point is
    not a trajectory, and the metric tables hold its values); a figure left by an earlier analysis of the
    same folder is then removed, so the report never shows a stale one."""
    plt, sns = _plt()
    rows = metric_rows(traj)
    kinds = kind_map(rows["metric"].unique())
    metrics = [m for m in dict.fromkeys(rows["metric"].astype(str)) if kinds[m] == kind]
    if not metrics:
        return []
    if rows["epoch"].nunique() < 2:
        for suffix in (".png", ".pdf"):
            (folder / f"trajectories_{kind}{suffix}").unlink(missing_ok=True)
        return []
    rows = rows[rows["metric"].isin(metrics)].copy()
    rows["condition"] = _condition(rows)
    conditions = [f"{a} · {d}" for a in orders.architectures for d in orders.doses if f"{a} · {d}" in set(rows["condition"])]
    losses = [x for x in orders.losses if x in set(rows["loss"])]
    width = max(3.4 * len(conditions), 5.5)  # one condition: panels as wide as the title, not a strip
    fig, axes = plt.subplots(len(metrics), len(conditions), figsize=(width, 2.8 * len(metrics)), squeeze=False,
                             sharex=True, sharey="row")  # fmt: skip
    palette = dict(zip(losses, sns.color_palette("colorblind", len(losses))))
    input_mean = inputs.groupby(["metric", "dose"])["value"].mean() if inputs is not None and len(inputs) else None
    drawn = False
    for i, metric in enumerate(metrics):
        for j, cond in enumerate(conditions):
            ax = axes[i, j]
            sub = rows[(rows["condition"] == cond) & (rows["metric"] == metric)]
            sns.lineplot(data=sub, x="epoch", y="value", hue="loss", hue_order=losses, palette=palette,
                         errorbar="sd", marker="o", markersize=4, ax=ax, legend=(i == 0 and j == len(conditions) - 1))  # fmt: skip
            dose = str(sub["dose"].iloc[0]) if len(sub) else ""
            if input_mean is not None and (metric, dose) in input_mean.index:  # on top: visible over a coinciding loss
                ax.axhline(float(input_mean[(metric, dose)]), color=INPUT_COLOR, linestyle=INPUT_STYLE, linewidth=INPUT_WIDTH,
                           label=INPUT_LABEL, zorder=3)  # fmt: skip
                drawn = True
            ax.set_title(cond if i == 0 else "", fontsize=9)
            ax.set_ylabel(axis_label(metric) if j == 0 else "")
            ax.set_xlabel("epoch" if i == len(metrics) - 1 else "")
            ax.xaxis.get_major_locator().set_params(integer=True)
    if axes[0, -1].get_legend() is not None:
        _legend_with_input(axes[0, -1], drawn, orders)
    label = kind.replace("_", "-")
    fig.suptitle(f"{label.capitalize()} metrics over epochs (mean; band: ±1 sd over images and seeds)")
    fig.tight_layout()
    return save(fig, folder, f"trajectories_{kind}")


def _legend_with_input(ax, with_input: bool, orders: Orders) -> None:
    """Seaborn's loss legend moved right of the panel (shared starts labelled), plus the LDCT-input line's entry."""

    legend = ax.get_legend()
    handles = list(legend.legend_handles)
    labels = [orders.loss_label(t.get_text(), wrap=True) for t in legend.get_texts()]
    if with_input:
        handles.append(Line2D([], [], color=INPUT_COLOR, linestyle=INPUT_STYLE, linewidth=INPUT_WIDTH))
        labels.append(INPUT_LABEL + " (mean)")
    ax.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.02, 1.0), title="loss", frameon=False)


def correlation_heatmap(corr: pd.DataFrame, orders: Orders, folder: Path) -> list[Path]:
    """``correlation_heatmap`` (see the module docstring)."""
    plt, sns = _plt()
    cell = corr[corr["scope"] == "cell"]
    if cell.empty or cell["rho"].notna().sum() == 0:
        return []
    metrics = list(dict.fromkeys(cell["metric"].astype(str)))
    losses = [x for x in orders.losses if x in set(cell["loss"])]
    fig, axes = plt.subplots(1, 2, figsize=(2.0 + 1.1 * len(metrics) * 2, 2.4 + 0.55 * len(losses)), squeeze=False)
    for ax, against in zip(axes[0], ["train_loss", "val_loss"]):
        mat = cell[cell["against"] == against].pivot_table(index="loss", columns="metric", values="rho", aggfunc="mean")
        mat = mat.reindex(index=losses, columns=metrics)
        mat.index = [orders.loss_label(x) for x in mat.index]
        mat.columns = [axis_label(m) for m in mat.columns]
        sns.heatmap(mat, ax=ax, vmin=-1, vmax=1, center=0, cmap="vlag", annot=True, fmt=".2f", cbar=ax is axes[0, -1],
                    cbar_kws={"label": "Spearman ρ (mean over cells)"}, linewidths=0.5)  # fmt: skip
        ax.set_title(f"ρ({against.replace('_', ' ')}, metric) over epochs")
        ax.set_xlabel("")
        ax.set_ylabel("loss")
        ax.tick_params(axis="x", rotation=30)
        ax.tick_params(axis="y", rotation=0)
    fig.text(0.5, -0.04, "↑ higher is better: ρ < 0 = metric improves as the loss falls.  "
             "↓ lower is better: ρ > 0 = metric improves as the loss falls.", ha="center", fontsize=8)  # fmt: skip
    fig.tight_layout()
    return save(fig, folder, "correlation_heatmap")


def pick_pd_metrics(metrics: Sequence[str], distortion: str = "psnr", perception: str = "niqe") -> tuple[str, str] | None:
    """The perception–distortion pair: the preferred names if scored, else the first full-reference
    higher-is-better metric and the first no-reference metric (metadata); None if there is none."""
    kinds = kind_map(metrics)
    d = distortion if distortion in kinds else next((m for m in metrics if kinds[m] == "full_reference"), None)
    p = perception if perception in kinds else next((m for m in metrics if kinds[m] == "no_reference"), None)
    return (d, p) if d and p else None


def perception_distortion_figure(traj: pd.DataFrame, orders: Orders, folder: Path, *, epoch: str = "final",
                                 distortion: str = "psnr", perception: str = "niqe") -> list[Path]:  # fmt: skip
    """``perception_distortion`` (see the module docstring)."""
    plt, sns = _plt()
    rows = select_epoch(metric_rows(traj), epoch, history=traj)
    pair = pick_pd_metrics(list(dict.fromkeys(rows["metric"].astype(str))), distortion, perception)
    if pair is None:
        return []
    d, p = pair
    per_image = rows[rows["metric"].isin(pair)].groupby(["loss", "architecture", "dose", "image", "metric"],
                                                          observed=True)["value"].mean().unstack("metric")  # fmt: skip
    stats = per_image.groupby(["loss", "architecture", "dose"], observed=True).agg(["mean", "std"]).reset_index()
    doses = [x for x in orders.doses if x in set(stats["dose"])]
    losses = [x for x in orders.losses if x in set(stats["loss"])]
    palette = dict(zip(losses, sns.color_palette("colorblind", len(losses))))
    markers = dict(zip(orders.architectures, ["o", "s", "^", "D", "v", "P", "X"] * 3))
    fig, axes = plt.subplots(1, len(doses), figsize=(4.6 * len(doses), 4.0), squeeze=False)
    for ax, dose in zip(axes[0], doses):
        sub = stats[stats["dose"] == dose]
        for loss, arch in [(x, a) for x in losses for a in orders.architectures]:
            point = sub[(sub["loss"] == loss) & (sub["architecture"] == arch)]
            if point.empty:
                continue
            x, xs, y, ys = point[[(d, "mean"), (d, "std"), (p, "mean"), (p, "std")]].to_numpy().ravel()
            ax.errorbar(x, y, xerr=xs, yerr=ys, fmt=markers.get(arch, "o"), color=palette[loss], ms=7, capsize=2,
                        label=f"{orders.loss_label(loss)} · {orders.architecture_label(arch)}")  # fmt: skip
        ax.set_xlabel(axis_label(d))
        ax.set_ylabel(axis_label(p))
        ax.set_title(f"dose {dose}")
        better_x = "→" if metric_info(d).higher_is_better else "←"
        better_y = "↑" if metric_info(p).higher_is_better else "↓"
        ax.text(0.02, 0.02, f"better: {better_x} {better_y}", transform=ax.transAxes, fontsize=8, color="0.3")
    handles, labels = axes[0, -1].get_legend_handles_labels()
    axes[0, -1].legend(handles, labels, loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8, title="loss · architecture")
    fig.suptitle(f"Perception–distortion plane at the {epoch.replace('_', '-')} epoch (mean ± sd over images)")
    fig.tight_layout()
    return save(fig, folder, "perception_distortion")


def zoom_region(reference_unit: np.ndarray, frac: float = 0.25, min_inside: float = 0.9) -> tuple[int, int, int]:
    """``(top, left, size)`` of the square (side ``frac`` × image side) with the most soft-tissue structure:
    among the squares whose windowed reference is at least ``min_inside`` inside the window (not clipped
    to black or white: no air, no bone), the one with the largest standard deviation; without such a
    square, the largest standard deviation overall. Coarse search with stride size/4."""
    h, w = reference_unit.shape
    size = max(8, int(min(h, w) * frac))
    stride = max(1, size // 4)
    inside = (reference_unit > 0) & (reference_unit < 1)
    best, where = (-1.0, -1.0), (0, 0)
    for top in range(0, h - size + 1, stride):
        for left in range(0, w - size + 1, stride):
            patch = reference_unit[top : top + size, left : left + size]
            frac_in = float(inside[top : top + size, left : left + size].mean())
            score = (float(frac_in >= min_inside), float(patch.std()))
            if score > best:
                best, where = score, (top, left)
    return where[0], where[1], size


def comparison_figure(examples: dict[str, dict[str, np.ndarray]], orders: Orders, folder: Path, name: str,
                      *, window=None, title: str = "") -> list[Path]:  # fmt: skip
    """One visual comparison panel from ``{loss: {"input", "output", "target", "image", "epoch"}}`` (HU)."""
    plt, _ = _plt()

    win = parse_window(window)
    losses = [x for x in orders.losses if x in examples]
    if not losses:
        return []
    first = examples[losses[0]]
    target = np.asarray(first["target"], dtype=np.float32)
    panels = [("LDCT input", np.asarray(first["input"]))] + [
        (orders.loss_label(loss, wrap=True), np.asarray(examples[loss]["output"])) for loss in losses]
    panels.append(("NDCT reference", target))
    top, left, size = zoom_region(window_to_unit(target, win))
    n = len(panels)
    fig, axes = plt.subplots(2, n, figsize=(2.4 * n, 5.0), gridspec_kw={"height_ratios": [1, 1]})
    for j, (label, img) in enumerate(panels):
        ax, zx = axes[0, j], axes[1, j]
        ax.imshow(img, cmap="gray", vmin=win.lo, vmax=win.hi, interpolation="nearest")
        ax.add_patch(Rectangle((left - 0.5, top - 0.5), size, size, fill=False, edgecolor="#ffbf00", linewidth=1.2))
        zx.imshow(img[top : top + size, left : left + size], cmap="gray", vmin=win.lo, vmax=win.hi,
                  interpolation="nearest")  # fmt: skip
        rmse = float(np.sqrt(np.mean((img.astype(np.float64) - target) ** 2)))
        sub = "" if label == "NDCT reference" else f"\nRMSE {rmse:.1f} HU"
        ax.set_title(f"{label}{sub}", fontsize=9)
        for a in (ax, zx):
            a.set_xticks([])
            a.set_yticks([])
        for spine in zx.spines.values():
            spine.set_edgecolor("#ffbf00")
    fig.suptitle(f"{title} — slice {first['image']}, epoch {int(first['epoch'])}; window [{win.lo:g}, {win.hi:g}] HU "
                 f"(L{win.level:g} W{win.width:g}); bottom: zoom ×{target.shape[0] / size:.0f}", fontsize=9)  # fmt: skip
    fig.tight_layout()
    return save(fig, folder, name)


def load_examples(folder: Path) -> pd.DataFrame:
    """The example ``.npz`` files written by the scorer, one row per cell with its arrays."""
    rows = []
    for path in sorted(folder.glob("*.npz")):
        loss, arch, dose, seed = path.stem.split("__")
        with np.load(path, allow_pickle=False) as z:  # a run folder's file: never unpickle
            rows.append({"cell": path.stem, "loss": loss, "architecture": arch, "dose": dose, "seed": int(seed[1:]),
                         "arrays": {k: z[k] for k in z.files}})  # fmt: skip
    return pd.DataFrame(rows, columns=["cell", "loss", "architecture", "dose", "seed", "arrays"])


def comparison_figures(examples: pd.DataFrame, orders: Orders, folder: Path, *, window=None) -> list[Path]:
    """``comparison_<architecture>_<dose>`` for every architecture × dose with examples."""
    paths: list[Path] = []
    for arch in orders.architectures:
        for dose in orders.doses:
            sub = examples[(examples["architecture"] == arch) & (examples["dose"] == dose)]
            if sub.empty:
                continue
            sub = sub[sub["seed"] == sub["seed"].min()]
            ex = {r.loss: r.arrays for r in sub.itertuples()}
            paths += comparison_figure(ex, orders, folder, f"comparison_{arch}_{dose}", window=window,
                                       title=f"{arch} · dose {dose}")  # fmt: skip
    return paths


def _radial_nps(residual: np.ndarray, ex: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray] | None:
    """``(f mm⁻¹, radial NPS HU²·mm²)`` of a residual ``(H, W)`` HU on example ``ex``'s slice, in its
    uniform ROIs (the stored mask, else the reference's), or None when no ROI fits."""
    pixel_mm = float(ex["pixel_mm"]) if "pixel_mm" in ex else 1.0
    target = np.asarray(ex["target"], dtype=np.float64)
    mask = np.asarray(ex["roi"], dtype=bool) if "roi" in ex else reference_mask(target, pixel_mm)
    res = image_nps(residual, mask, pixel_mm)
    return None if res is None else (res.f, res.radial)


def nps_figures(examples: pd.DataFrame, orders: Orders, folder: Path) -> list[Path]:
    """``nps_<dose>`` for every dose with examples (see the module docstring)."""
    plt, sns = _plt()
    paths: list[Path] = []
    palette = dict(zip(orders.losses, sns.color_palette("colorblind", len(orders.losses))))
    for dose in orders.doses:
        sub = examples[examples["dose"] == dose]
        archs = [a for a in orders.architectures if a in set(sub["architecture"])]
        if not archs:
            continue
        fig, axes = plt.subplots(1, len(archs), figsize=(4.8 * len(archs) + 2.8, 3.8), squeeze=False, sharey=True)  # + the legend
        drawn, unit = False, "mm"
        for ax, arch in zip(axes[0], archs):
            cells = sub[(sub["architecture"] == arch)]
            cells = cells[cells["seed"] == cells["seed"].min()]
            by_loss = {r.loss: r.arrays for r in cells.itertuples()}
            first = next(iter(by_loss.values()))
            unit = "mm" if "pixel_mm" in first else "px"
            target = np.asarray(first["target"], np.float64)
            curves = [(orders.loss_label(loss, wrap=True), by_loss[loss]["output"] - target, {"color": palette[loss]})
                      for loss in orders.losses if loss in by_loss]  # fmt: skip
            curves.append((INPUT_LABEL, first["input"] - target,
                           {"color": INPUT_COLOR, "linestyle": INPUT_STYLE, "linewidth": INPUT_WIDTH}))  # fmt: skip
            if "target_noise_free" in first:  # a noisy reference: its own noise (reference − noiseless FBP)
                curves.append(("NDCT reference noise", target - first["target_noise_free"],
                               {"color": "black", "linestyle": ":"}))  # fmt: skip
            for label, residual, style in curves:
                nps = _radial_nps(np.asarray(residual, np.float64), first)
                if nps is None:
                    continue
                f, radial = nps
                ax.plot(f[1:], np.maximum(radial[1:], 1e-12), label=label, marker="o", markersize=3, **style)
                drawn = True
            ax.set_yscale("log")
            ax.set_title(f"{arch} · dose {dose}", fontsize=9)
            ax.set_xlabel(f"radial spatial frequency [{unit}⁻¹]")
            ax.set_ylabel(f"NPS of the residual [HU²·{unit}²]" if ax is axes[0, 0] else "")
        if not drawn:
            plt.close(fig)
            continue
        axes[0, -1].legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8, frameon=False)
        fig.suptitle(f"Noise power spectrum of image − reference in uniform ROIs, slice {first['image']} "
                     "(ICRU 87 / TG-233; one slice, lowest seed, last epoch)", fontsize=9)  # fmt: skip
        fig.tight_layout()
        paths += save(fig, folder, f"nps_{dose}")
    return paths


def cd_figures(ranks: pd.DataFrame, orders: Orders, folder: Path, alpha: float = 0.05) -> list[Path]:
    """``cd_<metric>`` (see the module docstring); nothing when no condition has ≥ 3 losses."""
    plt, _ = _plt()

    paths: list[Path] = []
    if ranks.empty:
        return paths
    for metric, g in ranks.groupby("metric", sort=False):
        if not metric_info(str(metric)).ranked:  # no better direction: a rank "1 = best" means nothing
            continue
        conds = list(g.groupby(["architecture", "dose"], sort=False).groups)
        fig, axes = plt.subplots(len(conds), 1, figsize=(7.0, 1.0 + 1.5 * len(conds)), squeeze=False)
        for ax, (arch, dose) in zip(axes[:, 0], conds):
            sub = g[(g["architecture"] == arch) & (g["dose"] == dose)].set_index("loss")
            sub = sub.loc[[x for x in orders.losses if x in sub.index]]
            sig = pd.DataFrame({a: sub.loc[a, "nemenyi"] for a in sub.index}).loc[sub.index, sub.index]
            sub.index = sig.index = sig.columns = [orders.loss_label(x) for x in sub.index]
            sp.critical_difference_diagram(sub["mean_rank"], sig, ax=ax, alpha=alpha,
                                           label_fmt_left="{label} ({rank:.2f})", label_fmt_right="({rank:.2f}) {label}")  # fmt: skip
            first = sub.iloc[0]
            ax.set_title(f"{axis_label(str(metric))} — {arch} · dose {dose}: mean rank (1 = best), "
                         f"n = {int(first['n'])} units, CD = {float(first['cd']):.2f}", fontsize=9)  # fmt: skip
        fig.suptitle(f"Critical-difference diagram (Friedman + Nemenyi, α = {alpha:g}; bars join losses not "
                     "significantly different)", fontsize=9)  # fmt: skip
        fig.tight_layout()
        paths += save(fig, folder, f"cd_{metric}")
    return paths


# ------------------------------------------------------------------------------ task-based image quality

NDCT_COLOR, NDCT_STYLE = "black", ":"


def shown_inserts(inserts: Sequence[str], diameters: Sequence[float]) -> list[str]:
    """The inserts drawn: all of up to three, else the two smallest and the largest."""
    order = [i for _, i in sorted(zip(diameters, inserts), key=lambda t: t[0])]
    return order if len(order) <= 3 else [*order[:2], order[-1]]


def dprime_dose_figures(det: pd.DataFrame, orders: Orders, folder: Path, observers: Sequence[str]) -> list[Path]:
    """``dprime_vs_dose_<object>``: the leading observer's held-out d′ (± sd) against the total dose
    (% of the NDCT's, dose × views / 720; log axis), one line per loss, one panel per insert (the two
    smallest and the largest of more than three) and architecture; dashed grey: the LDCT input at every
    dose of each view count; dotted black: the NDCT reference."""
    plt, sns = _plt()
    obs = primary_observer(observers)
    summary = summarise(det, obs, "dprime_heldout")
    summary = summary.assign(total=summary["condition"].map(total_dose))
    palette = dict(zip(orders.losses, sns.color_palette("colorblind", len(orders.losses))))
    paths: list[Path] = []
    for obj in dict.fromkeys(summary["object"]):
        sub = summary[summary["object"] == obj]
        sizes = sub.drop_duplicates("insert")
        inserts = shown_inserts(list(sizes["insert"]), list(sizes["diameter_mm"]))
        model = sub[sub["source"] == SOURCE_MODEL]
        archs = [a for a in orders.architectures if a in set(model["architecture"])] or [""]
        fig, axes = plt.subplots(len(archs), len(inserts), figsize=(4.2 * len(inserts), 3.4 * len(archs)),
                                 squeeze=False, sharey=True)  # fmt: skip
        for i, arch in enumerate(archs):
            for j, ins in enumerate(inserts):
                ax = axes[i, j]
                cur = sub[sub["insert"] == ins]
                for loss in orders.losses:
                    pts = cur[(cur["source"] == SOURCE_MODEL) & (cur["loss"] == loss) & (cur["architecture"] == arch)]
                    if len(pts):
                        pts = pts.sort_values("total")
                        ax.errorbar(pts["total"], pts["value"], yerr=pts["sd"], marker="o", color=palette[loss],
                                    capsize=2, label=orders.loss_label(loss, wrap=True))  # fmt: skip
                inp = cur[cur["source"] == SOURCE_INPUT].copy()
                views = inp["condition"].map(lambda c: parse_condition(str(c))[1])
                for k, (v, g) in enumerate(inp.groupby(views, sort=True)):
                    g = g.sort_values("total")
                    ax.plot(g["total"], g["value"], color=INPUT_COLOR, linestyle=INPUT_STYLE, linewidth=INPUT_WIDTH,
                            marker="sdv^."[k % 5], markersize=4, label=f"{INPUT_LABEL} ({v} views)")  # fmt: skip
                ndct = cur[cur["source"] == SOURCE_NDCT]
                if len(ndct):
                    ax.axhline(float(ndct["value"].iloc[0]), color=NDCT_COLOR, linestyle=NDCT_STYLE, label="NDCT reference")
                ax.set_xscale("log")
                ax.set_xticks(sorted(cur["total"].unique()))  # the measured doses, labelled
                ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.3g}"))
                ax.xaxis.set_minor_formatter(NullFormatter())
                ax.tick_params(axis="x", labelsize=8, labelrotation=45)
                ax.set_title(f"{ins}" + (f" · {orders.architecture_label(arch)}" if arch else ""), fontsize=9)
                ax.set_xlabel("total dose [% of NDCT]" if i == len(archs) - 1 else "")
                ax.set_ylabel(f"d′ ({obs}, held-out)" if j == 0 else "")
        handles, labels = axes[0, -1].get_legend_handles_labels()
        axes[0, -1].legend(handles, labels, loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8, frameon=False)
        fig.suptitle(f"Detectability against dose, {obj} (mean ± sd; final epoch, seeds averaged; total dose = "
                     "dose × views / 720)", fontsize=10)  # fmt: skip
        fig.tight_layout()
        paths += save(fig, folder, f"dprime_vs_dose_{obj}")
    return paths


def ttf_figures(ttf: pd.DataFrame, orders: Orders, folder: Path, pixel_mm: float | None = None) -> list[Path]:
    """``ttf_<dose>``: the TTF per rod contrast (one panel each), one line per loss (line style per
    architecture; final epoch, seeds averaged), the LDCT input at that dose dashed grey, the NDCT reference
    dotted black; up to the Nyquist frequency when the pixel size is known."""
    plt, sns = _plt()
    if ttf is None or ttf.empty:
        return []
    model = ttf[ttf["source"] == SOURCE_MODEL]
    if len(model):
        model = model[model["epoch"] == model.groupby("cell")["epoch"].transform("max")]
    palette = dict(zip(orders.losses, sns.color_palette("colorblind", len(orders.losses))))
    styles = dict(zip(orders.architectures, ["-", "-.", (0, (5, 1)), (0, (3, 1, 1, 1))] * 3))
    nyquist = 0.5 / pixel_mm if pixel_mm else None
    rods = list(dict.fromkeys(ttf["insert"]))
    paths: list[Path] = []
    for dose in orders.doses:
        cells = model[model["dose"] == dose]
        if cells.empty:
            continue
        fig, axes = plt.subplots(1, len(rods), figsize=(3.6 * len(rods), 3.4), squeeze=False, sharey=True)
        for ax, rod in zip(axes[0], rods):
            for (loss, arch), g in cells[cells["insert"] == rod].groupby(["loss", "architecture"], sort=False):
                curve = g.groupby("f", sort=True)["ttf"].mean()
                ax.plot(curve.index, curve.to_numpy(), color=palette.get(loss), linestyle=styles.get(arch, "-"),
                        label=f"{orders.loss_label(loss)} · {orders.architecture_label(arch)}")  # fmt: skip
            for source, cond, style, label in ((SOURCE_INPUT, dose, {"color": INPUT_COLOR, "linestyle": INPUT_STYLE},
                                                f"{INPUT_LABEL} ({dose})"),
                                               (SOURCE_NDCT, None, {"color": NDCT_COLOR, "linestyle": NDCT_STYLE},
                                                "NDCT reference")):  # fmt: skip
                ref = ttf[(ttf["source"] == source) & (ttf["insert"] == rod)]
                ref = ref if cond is None else ref[ref["condition"] == cond]
                if len(ref):
                    ax.plot(ref["f"], ref["ttf"], label=label, linewidth=INPUT_WIDTH, **style)
            ax.axhline(0.5, color="0.8", linewidth=0.8)
            ax.axhline(0.1, color="0.8", linewidth=0.8)
            if nyquist:
                ax.set_xlim(0, nyquist)
            ax.set_title(rod, fontsize=9)
            ax.set_xlabel("spatial frequency [cycles/mm]")
            ax.set_ylabel("TTF" if ax is axes[0, 0] else "")
        axes[0, -1].legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8, frameon=False)
        fig.suptitle(f"Task transfer function (TG-233) per rod contrast, dose {dose}", fontsize=10)
        fig.tight_layout()
        paths += save(fig, folder, f"ttf_{dose}")
    return paths


def rank_agreement(traj: pd.DataFrame, det: pd.DataFrame, observers: Sequence[str], distortion: str = "psnr"
                   ) -> pd.DataFrame:  # fmt: skip
    """Per architecture × dose × loss at the final epoch: the ``distortion`` metric's mean (images and seeds)
    and rank among the losses (1 = best), and the mean over the detection inserts of the loss's rank by the
    leading observer's held-out d′ (1 = highest)."""
    rows = select_epoch(metric_rows(traj), "final", history=traj)
    rows = rows[rows["metric"] == distortion]
    if rows.empty:
        return pd.DataFrame()
    higher = metric_info(distortion).higher_is_better
    dist = rows.groupby(["architecture", "dose", "loss"], observed=True)["value"].mean().rename("metric").reset_index()
    dist["metric_rank"] = dist.groupby(["architecture", "dose"])["metric"].rank(ascending=not higher)
    d = summarise(det, primary_observer(observers), "dprime_heldout")
    d = d[d["source"] == SOURCE_MODEL]
    d = d.assign(rank=d.groupby(["architecture", "dose", "object", "insert"])["value"].rank(ascending=False))
    dr = d.groupby(["architecture", "dose", "loss"])["rank"].mean().rename("dprime_rank").reset_index()
    return dist.merge(dr, on=["architecture", "dose", "loss"])


def rank_figure(traj: pd.DataFrame, det: pd.DataFrame, orders: Orders, folder: Path, observers: Sequence[str],
                distortion: str = "psnr") -> list[Path]:  # fmt: skip
    """``<metric>_rank_vs_dprime_rank``: per architecture · dose, each loss at (its rank on the distortion
    metric, its mean rank on d′ over the inserts), final epoch; on the diagonal the two orders agree, far
    below it the loss that wins on the metric loses the lesion. Nothing with fewer than 2 losses."""
    plt, sns = _plt()
    ranks = rank_agreement(traj, det, observers, distortion)
    if ranks.empty or ranks["loss"].nunique() < 2:
        return []
    conds = [(a, d) for a in orders.architectures for d in orders.doses
             if ((ranks["architecture"] == a) & (ranks["dose"] == d)).any()]  # fmt: skip
    palette = dict(zip(orders.losses, sns.color_palette("colorblind", len(orders.losses))))
    n = int(ranks["loss"].nunique())
    fig, axes = plt.subplots(1, len(conds), figsize=(3.4 * len(conds) + 2.6, 3.8), squeeze=False)
    shown = [x for x in orders.losses if x in set(ranks["loss"])]
    offset = {x: 0.06 * (k - (len(shown) - 1) / 2) for k, x in enumerate(shown)}  # ties stay visible side by side
    for ax, (arch, dose) in zip(axes[0], conds):
        sub = ranks[(ranks["architecture"] == arch) & (ranks["dose"] == dose)]
        ax.plot([1, n], [1, n], color="0.7", linewidth=0.8)
        for r in sub.itertuples():
            ax.scatter(r.metric_rank + offset.get(r.loss, 0.0), r.dprime_rank, color=palette.get(r.loss), s=40,
                       zorder=3, label=orders.loss_label(r.loss, wrap=True))  # fmt: skip
        ax.set_xlim(0.5, n + 0.5)
        ax.set_xticks(range(1, n + 1))
        ax.set_ylim(n + 0.5, 0.5)
        ax.set_xlabel(f"{distortion} rank (1 = best)")
        ax.set_ylabel("mean d′ rank over inserts (1 = best)" if ax is axes[0, 0] else "")
        ax.set_title(f"{orders.architecture_label(arch)} · dose {dose}", fontsize=9)
    by_label: dict[str, Any] = {}  # one legend entry per loss, from every panel
    for ax in axes[0]:
        by_label.update(zip(*reversed(ax.get_legend_handles_labels())))
    axes[0, -1].legend(list(by_label.values()), list(by_label), loc="upper left", bbox_to_anchor=(1.02, 1.0),
                       fontsize=8, frameon=False, title="loss")  # fmt: skip
    fig.suptitle(f"Does the loss that wins {distortion} lose the lesion? Final epoch, seeds averaged; "
                 "ties side by side", fontsize=10)  # fmt: skip
    fig.tight_layout()
    return save(fig, folder, f"{distortion}_rank_vs_dprime_rank")


def task_figures(traj: pd.DataFrame, det: pd.DataFrame, ttf: pd.DataFrame | None, orders: Orders, folder: Path,
                 observers: Sequence[str], pixel_mm: float | None = None,
                 distortion: str = "psnr") -> dict[str, list[Path]]:  # fmt: skip
    """The task-based image quality figures (``analysis/detectability.parquet``, ``ttf.parquet``)."""
    return {
        "dprime_vs_dose": dprime_dose_figures(det, orders, folder, observers),
        "ttf": ttf_figures(ttf, orders, folder, pixel_mm) if ttf is not None else [],
        "rank_vs_dprime": rank_figure(traj, det, orders, folder, observers, distortion),
    }


def build_figures(traj: pd.DataFrame, corr: pd.DataFrame | None, ranks: pd.DataFrame | None, orders: Orders,
                  folder: Path, *, examples_dir: Path | None = None, window=None, epoch: str = "final",
                  distortion: str = "psnr", perception: str = "niqe",
                  inputs: pd.DataFrame | None = None) -> dict[str, list[Path]]:  # fmt: skip
    """Every figure of the module docstring; returns ``figure group -> paths`` (empty where there was
    nothing to draw, e.g. no no-reference metric). ``inputs``: the LDCT-input baseline
    (``analysis.scoring.load_input_baseline``) for the reference lines of the trajectory figures."""
    out = {
        "training_loss": training_loss_figure(traj, orders, folder),
        "trajectories_full_reference": trajectory_figure(traj, orders, folder, "full_reference", inputs),
        "trajectories_no_reference": trajectory_figure(traj, orders, folder, "no_reference", inputs),
        "correlation_heatmap": correlation_heatmap(corr, orders, folder) if corr is not None else [],
        "perception_distortion": perception_distortion_figure(traj, orders, folder, epoch=epoch,
                                                              distortion=distortion, perception=perception),
        "cd": cd_figures(ranks, orders, folder) if ranks is not None else [],
    }  # fmt: skip
    if examples_dir is not None and examples_dir.is_dir():
        examples = load_examples(examples_dir)
        out["comparison"] = comparison_figures(examples, orders, folder, window=window)
        out["nps"] = nps_figures(examples, orders, folder)
    return out

"""Figures of the book: one function per figure kind, each returning a matplotlib Figure.

Every function takes plain DataFrames or arrays, labels every axis, uses the one
theme set here and colour-blind-safe palettes, and shows every seed (as a band
or as points) rather than a bare mean.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib import animation
from matplotlib.colors import LogNorm

from .errors import WdevError

DIVERGING = "RdBu_r"      # ColorBrewer RdBu: readable with the common colour-vision deficiencies
SEQUENTIAL = "viridis"
LOSS_COLOURS = {"train": sns.color_palette("colorblind")[0], "test": sns.color_palette("colorblind")[1]}
BAND = ("sd", 1)          # seaborn errorbar spec: mean +- one standard deviation over seeds (linear axes)
RANGE = ("pi", 100)       # the full range over seeds: stays positive on log axes, where mean - sd may not


def metrics_frame(runs, fields=("width", "seed", "lr", "loss", "init", "mask")) -> pd.DataFrame:
    """All runs' metrics.csv rows in one long table, with the named RunConfig fields as columns."""
    frames = [r.metrics.assign(**{f: getattr(r.config, f) for f in fields}) for r in runs]
    if not frames:
        raise WdevError("metrics_frame got no runs")
    return pd.concat(frames, ignore_index=True)


def set_theme() -> None:
    """Apply the book's one plotting theme (seaborn whitegrid, colour-blind palette)."""
    sns.set_theme(style="whitegrid", context="notebook", palette="colorblind")
    matplotlib.rcParams.update({"figure.dpi": 100, "savefig.dpi": 110, "figure.constrained_layout.use": True,
                                "axes.titlesize": "medium", "image.cmap": SEQUENTIAL})


set_theme()


def show(fig: plt.Figure) -> None:
    """Display a figure now, in its place among a cell's other outputs, and close it."""
    from IPython.display import display

    display(fig)
    plt.close(fig)


def _need(df: pd.DataFrame, columns, what: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise WdevError(f"{what}: the table lacks column(s) {missing}; it has {list(df.columns)}")


def width_palette(widths) -> dict:
    """One colour per width, ordered along a colour-blind-safe sequential map."""
    widths = sorted(set(int(w) for w in widths))
    cmap = matplotlib.colormaps[SEQUENTIAL]
    return dict(zip(widths, (cmap(x) for x in np.linspace(0, 0.85, len(widths)))))  # no pale yellow on white


def _hue_palette(df: pd.DataFrame, hue: str):
    if hue == "width":
        return width_palette(df[hue])
    levels = list(dict.fromkeys(df[hue]))
    return dict(zip(levels, sns.color_palette("colorblind", len(levels))))


# ----------------------------------------------------------------------------- data and model

def sample_images(x: np.ndarray, y: np.ndarray, *, per_class: int = 4, max_classes: int = 10,
                  title: str = "") -> plt.Figure:
    """Grid of sample images: one column per class, `per_class` rows, the label above each column."""
    side = int(round(np.sqrt(x.shape[1])))
    if side * side != x.shape[1]:
        raise WdevError(f"sample_images: {x.shape[1]} pixels are not a square image")
    classes = np.unique(y)[:max_classes]
    fig, axes = plt.subplots(per_class, len(classes), figsize=(1.1 * len(classes), 1.1 * per_class + 0.4),
                             squeeze=False)
    for j, c in enumerate(classes):
        idx = np.flatnonzero(y == c)[:per_class]
        for i in range(per_class):
            ax = axes[i, j]
            if i < len(idx):
                ax.imshow(x[idx[i]].reshape(side, side), cmap="gray_r", vmin=0, vmax=1)
            ax.set_xticks([]), ax.set_yticks([])
        axes[0, j].set_title(f"class {c}")
    fig.suptitle(title or "sample images (pixel intensity 0 = white, 1 = black)")
    return fig


def weight_histograms(weights: dict, bounds: dict, *, bins: int = 60) -> plt.Figure:
    """Histogram of each layer's initial weights with the Glorot bounds +-a drawn as dashed lines."""
    fig, axes = plt.subplots(1, len(weights), figsize=(4 * len(weights), 3.2), squeeze=False)
    for ax, (name, w) in zip(axes[0], weights.items()):
        w = np.asarray(w).ravel()
        a = float(bounds[name])
        ax.hist(w, bins=bins, density=True, color=sns.color_palette("colorblind")[0], alpha=0.8,
                label="initial weights")
        ax.axhline(1 / (2 * a), color="k", lw=1, label="U(-a, a) density")
        for s in (-a, a):
            ax.axvline(s, color=sns.color_palette("colorblind")[3], ls="--", lw=1.2)
        ax.set(title=f"{name}  (a = {a:.4f})", xlabel="initial weight $w_i$", ylabel="density")
    axes[0, 0].legend(loc="lower center", fontsize="small")
    return fig


def loss_functions(table: pd.DataFrame, *, x: str = "gap", xlabel: str = "logit of the true class minus the others") -> plt.Figure:
    """Loss of one sample vs a logit gap, one line per loss function (columns other than `x`)."""
    _need(table, [x], "loss_functions")
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for col in [c for c in table.columns if c != x]:
        ax.plot(table[x], table[col], lw=2, label=col)
    ax.set(xlabel=xlabel, ylabel="cross-entropy loss (nats)")
    ax.legend()
    return fig


# ----------------------------------------------------------------------------- letter mark (Fig. 1)

def matrix_limit(matrix: np.ndarray) -> float:
    """Symmetric colour limit for a weight matrix: its largest absolute value."""
    return float(np.max(np.abs(matrix))) or 1.0


def mark_row(matrices: list, epochs: list, metrics: pd.DataFrame, *, label: str,
             vmax: float | None = None) -> plt.Figure:
    """Fig. 1 for one network: the hidden1->hidden2 matrix at each snapshot epoch, the loss curves below."""
    _need(metrics, ["epoch", "train_loss", "test_loss"], "mark_row")
    vmax = vmax or matrix_limit(matrices[0])
    n = len(matrices)
    fig = plt.figure(figsize=(max(2.2 * n, 6.5), 5.4))
    gs = fig.add_gridspec(2, n, height_ratios=[1.25, 1])
    axes = [fig.add_subplot(gs[0, k]) for k in range(n)]
    for ax, m, e in zip(axes, matrices, epochs):
        im = ax.imshow(m, cmap=DIVERGING, vmin=-vmax, vmax=vmax, interpolation="nearest")
        ax.set(title=f"epoch {e}", xlabel="hidden-1 unit", ylabel="hidden-2 unit")
        ax.set_xticks([]), ax.set_yticks([])
    fig.colorbar(im, ax=axes, shrink=0.9, label="weight")
    loss_ax = fig.add_subplot(gs[1, :])
    _loss_axes(loss_ax, metrics)
    for e in epochs:
        loss_ax.axvline(e, color="0.6", lw=0.8, ls=":")
    fig.suptitle(label)
    return fig


def _loss_axes(ax, metrics: pd.DataFrame) -> None:
    for split in ("train", "test"):
        ax.plot(metrics["epoch"], metrics[f"{split}_loss"], color=LOSS_COLOURS[split], lw=1.3, label=split)
    ax.set_yscale("log")
    ax.set(xlabel="epoch", ylabel="loss (nats, log scale)")
    ax.legend(fontsize="small")


def mark_contrast(table: pd.DataFrame, *, hue: str = "network", levels: dict | None = None) -> plt.Figure:
    """Mark contrast vs epoch: how much the letter still stands out of the matrix, one line per network.

    `levels` maps a label to a contrast drawn as a dashed grey line (e.g. the scorecard's thresholds).
    """
    _need(table, ["epoch", "contrast", hue], "mark_contrast")
    fig, ax = plt.subplots(figsize=(6, 3.8))
    sns.lineplot(table, x="epoch", y="contrast", hue=hue, marker="o", ax=ax, palette=_hue_palette(table, hue))
    ax.axhline(0, color="k", lw=0.8)
    for style, (name, value) in zip(["--", ":"], (levels or {}).items()):
        ax.axhline(value, color="0.4", ls=style, lw=1, label=name)
    ax.legend(fontsize="small")
    ax.set(xlabel="epoch", ylabel="mark contrast (Cohen's d of |w|)")
    return fig


def animate_matrix(matrices: list, epochs: list, path, *, title: str = "", fps: int = 4,
                   vmax: float | None = None) -> Path:
    """Write a GIF of a weight matrix over snapshots (one frame per epoch) and return its path."""
    if len(matrices) != len(epochs) or not matrices:
        raise WdevError(f"animate_matrix: {len(matrices)} matrices for {len(epochs)} epochs; give one per epoch")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    vmax = vmax or matrix_limit(matrices[0])
    fig, ax = plt.subplots(figsize=(3.6, 3.6), layout="constrained")
    im = ax.imshow(matrices[0], cmap=DIVERGING, vmin=-vmax, vmax=vmax, interpolation="nearest")
    ax.set(xlabel="hidden-1 unit", ylabel="hidden-2 unit")
    ax.set_xticks([]), ax.set_yticks([])
    fig.colorbar(im, ax=ax, shrink=0.75, label="weight")
    head = ax.set_title("")

    def frame(i):
        im.set_data(matrices[i])
        head.set_text(f"{title} epoch {epochs[i]}".strip())
        return im, head

    anim = animation.FuncAnimation(fig, frame, frames=len(matrices), blit=False)
    anim.save(path, writer=animation.PillowWriter(fps=fps), dpi=100)
    plt.close(fig)
    return path


# ----------------------------------------------------------------------------- regimes (Fig. 2)

def loss_curves(curves: pd.DataFrame, *, hue: str = "width", splits=("train", "test"),
                logx: bool = False) -> plt.Figure:
    """Train and test loss vs epoch, one line per `hue` level: mean over seeds, band from min to max."""
    _need(curves, ["epoch", hue] + [f"{s}_loss" for s in splits], "loss_curves")
    fig, axes = plt.subplots(1, len(splits), figsize=(5.2 * len(splits), 3.8), sharey=True, squeeze=False)
    palette = _hue_palette(curves, hue)
    for ax, split in zip(axes[0], splits):
        sns.lineplot(curves, x="epoch", y=f"{split}_loss", hue=hue, palette=palette, errorbar=RANGE,
                     ax=ax, lw=1.2, legend=split == splits[-1])
        ax.set_yscale("log")
        if logx:
            ax.set_xscale("symlog", linthresh=1)
        ax.set(title=f"{split} loss", xlabel="epoch", ylabel=f"{split} loss (nats, log scale)")
    axes[0, -1].legend(title=hue, fontsize="small", loc="best")
    return fig


def phase_diagram(events: pd.DataFrame, *, x: str = "width", regime: str | None = "regime",
                  columns: dict | None = None, logx: bool = False, xlabel: str | None = None) -> plt.Figure:
    """Phase diagram: epoch of the train/test loss minimum and of divergence vs `x`, each run a point.

    `events` has one row per run with `x`, the event columns (NaN where an event did not
    happen) and optionally `regime`; the majority regime at each `x` is shaded.
    """
    columns = columns or {"min_train_epoch": "train-loss minimum", "min_test_epoch": "test-loss minimum",
                          "divergence_epoch": "divergence"}
    _need(events, [x] + list(columns), "phase_diagram")
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    xs = np.sort(events[x].unique())
    if regime and regime in events.columns:
        _shade_regimes(ax, events, x, regime, xs)
    markers = ["o", "s", "X", "D"]
    pal = sns.color_palette("colorblind")
    for k, (col, name) in enumerate(columns.items()):
        d = events[[x, col]].dropna()
        if d.empty:
            continue
        ax.scatter(d[x], d[col], s=18, alpha=0.45, color=pal[k], marker=markers[k % 4])
        mean = d.groupby(x)[col].mean()
        ax.plot(mean.index, mean.values, color=pal[k], marker=markers[k % 4], lw=1.6, label=f"{name} (mean)")
    if logx:
        ax.set_xscale("log")
    ax.set(xlabel=xlabel or x, ylabel="epoch")
    ax.legend(fontsize="small", loc="best")
    return fig


REGIME_COLOURS = {"low trainability": "#DDCC77", "untrainability": "#CC6677", "high trainability": "#88CCEE"}


def _shade_regimes(ax, events, x, regime, xs) -> None:
    major = events.groupby(x)[regime].agg(lambda s: s.value_counts().index[0])
    edges = np.concatenate([[xs[0]], (xs[:-1] + xs[1:]) / 2, [xs[-1]]]) if len(xs) > 1 else np.array([xs[0] - 1, xs[0] + 1])
    seen = set()
    for i, xv in enumerate(xs):
        name = major[xv]
        colour = REGIME_COLOURS.get(name, "0.9")
        ax.axvspan(edges[i], edges[i + 1], color=colour, alpha=0.35, lw=0,
                   label=None if name in seen else f"regime: {name}")
        seen.add(name)


def by_width(table: pd.DataFrame, ys: dict, *, ylabel: str, x: str = "width", logy: bool = True,
             logx: bool = False, xlabel: str | None = None, fits: dict | None = None,
             lines: dict | None = None) -> plt.Figure:
    """Per-run values vs width (one point per seed) with the mean as a line, one colour per column in `ys`.

    `fits` maps a column of `ys` to (label, xs, ys), drawn dashed in that column's colour; `lines` maps
    a label to (xs, ys), drawn in black with distinct dash styles (a reference law).
    """
    _need(table, [x] + list(ys), "by_width")
    fig, ax = plt.subplots(figsize=(6, 4))
    pal = sns.color_palette("colorblind")
    for k, (col, name) in enumerate(ys.items()):
        d = table[[x, col]].dropna()
        jitter = 1 + 0.015 * (k - (len(ys) - 1) / 2) if logx else 0
        xs = d[x] * jitter if logx else d[x]
        ax.scatter(xs, d[col], s=16, alpha=0.5, color=pal[k])
        mean = d.groupby(x)[col].mean()
        ax.plot(mean.index, mean.values, marker="o", color=pal[k], lw=1.6, label=f"{name} (mean; points: seeds)")
        if fits and col in fits:
            label, fx, fy = fits[col]
            ax.plot(fx, fy, ls="--", color=pal[k], lw=1.2, label=label)
    for style, (name, (lx, ly)) in zip(["--", ":", "-.", (0, (5, 1, 1, 1))], (lines or {}).items()):
        ax.plot(lx, ly, color="k", ls=style, lw=1.2, label=name)
    if logy:
        ax.set_yscale("log")
    if logx:
        ax.set_xscale("log")
    ax.set(xlabel=xlabel or x, ylabel=ylabel)
    ax.legend(fontsize="small")
    return fig


def heatmap(table: pd.DataFrame, *, x: str, y: str, value: str, label: str, annot: str | None = None,
            log: bool = True, xlabel: str | None = None, ylabel: str | None = None) -> plt.Figure:
    """Heatmap of the mean of `value` over a grid (e.g. width x learning rate), optional text per cell."""
    _need(table, [x, y, value] + ([annot] if annot else []), "heatmap")
    grid = table.pivot_table(index=y, columns=x, values=value, aggfunc="mean").sort_index(ascending=False)
    fig, ax = plt.subplots(figsize=(1.0 * grid.shape[1] + 2.5, 0.6 * grid.shape[0] + 1.8))
    vals = grid.to_numpy(dtype=float)
    positive = vals[np.isfinite(vals) & (vals > 0)]
    norm = LogNorm(positive.min(), positive.max()) if log and positive.size and positive.min() < positive.max() else None
    im = ax.imshow(np.where(np.isfinite(vals), vals, np.nan), cmap=SEQUENTIAL, norm=norm, aspect="auto")
    fig.colorbar(im, ax=ax, label=label)
    ax.set_xticks(range(grid.shape[1]), [f"{c:g}" for c in grid.columns])
    ax.set_yticks(range(grid.shape[0]), [f"{r:g}" for r in grid.index])
    ax.grid(False)
    if annot:
        text = table.groupby([y, x])[annot].agg(lambda s: "/".join(sorted(set(map(str, s)))))
        for i, r in enumerate(grid.index):
            for j, c in enumerate(grid.columns):
                if (r, c) in text.index:
                    ax.text(j, i, text[(r, c)], ha="center", va="center", fontsize="x-small", color="w",
                            bbox={"facecolor": "k", "alpha": 0.35, "lw": 0, "pad": 1})
    ax.set(xlabel=xlabel or x, ylabel=ylabel or y)
    return fig


# ----------------------------------------------------------------------------- initial vs final (Fig. 3)

def joint_histogram(hist, stats: pd.DataFrame, strips: pd.DataFrame, *, ylabel: str = "final weight $w_f$",
                    title: str = "", diagonal: bool = True) -> plt.Figure:
    """2-D histogram of (w_i, w_f) on a log colour scale with the conditional median and the 2, 25, 75
    and 98 percentiles drawn as lines, and P(w_f | w_i) in strips of w_i beside it.

    `hist` has counts (nx, ny), x_edges, y_edges (deviation.joint_histogram); `stats` holds per-bin
    quantiles of the plotted y quantity (bin_center, median, q02, q25, q75, q98); `strips` is a long
    table (strip, strip_left, strip_right, n, x_left, x_right, density) as deviation.conditional_density gives.
    """
    _need(stats, ["bin_center", "median", "q02", "q25", "q75", "q98"], "joint_histogram")
    _need(strips, ["strip", "strip_left", "strip_right", "n", "x_left", "x_right", "density"], "joint_histogram strips")
    counts = np.asarray(hist.counts, dtype=float)
    fig = plt.figure(figsize=(9.5, 5.4))
    ids = list(dict.fromkeys(strips["strip"]))
    gs = fig.add_gridspec(len(ids), 2, width_ratios=[2.3, 1])
    ax = fig.add_subplot(gs[:, 0])
    mesh = ax.pcolormesh(hist.x_edges, hist.y_edges, np.where(counts > 0, counts, np.nan).T,
                         norm=LogNorm(vmin=1, vmax=max(counts.max(), 2)), cmap="magma_r")
    fig.colorbar(mesh, ax=ax, label="number of weights (log scale)")
    pal = sns.color_palette("colorblind")
    c = stats["bin_center"]
    for cols, style, name in ((("q02", "q98"), ":", "2 and 98 %"), (("q25", "q75"), "--", "25 and 75 %"),
                              (("median",), "-", "median")):
        for k, col in enumerate(cols):
            ax.plot(c, stats[col], color=pal[0], ls=style, lw=1.8, label=name if k == 0 else None)
    if diagonal:
        lim = np.array([hist.x_edges[0], hist.x_edges[-1]])
        ax.plot(lim, lim, color="k", ls=(0, (1, 3)), lw=1, label="$w_f = w_i$")
    ax.set(xlabel="initial weight $w_i$", ylabel=ylabel, title=title)
    ax.legend(fontsize="small", loc="upper left", title="percentiles of $w_f$ per bin", title_fontsize="small")
    for k, sid in enumerate(ids):
        d = strips[strips["strip"] == sid]
        lo, hi, n = d["strip_left"].iloc[0], d["strip_right"].iloc[0], int(d["n"].iloc[0])
        ax.axvspan(lo, hi, color=pal[4], alpha=0.12, lw=0)
        sub = fig.add_subplot(gs[k, 1])
        edges = np.r_[d["x_left"].to_numpy(), d["x_right"].iloc[-1]]
        dens = d["density"].to_numpy()
        sub.stairs(dens, edges, fill=True, color=pal[4], alpha=0.85)
        if diagonal:
            sub.axvline((lo + hi) / 2, color="k", ls=":", lw=1)
        sub.set_yscale("log")
        if (dens > 0).any():
            sub.set_ylim(dens[dens > 0].min() / 2, dens.max() * 2)
        sub.set(xlabel=ylabel, ylabel="density (log)", title=f"$w_i$ in [{lo:.3g}, {hi:.3g}], n = {n}")
    return fig


# ----------------------------------------------------------------------------- conditional deviation (Fig. 4)

def conditional_moments(stats: pd.DataFrame, *, hue: str | None = None, fits: pd.DataFrame | None = None,
                        quantities: dict | None = None,
                        xlabel: str = "initial weight $w_i$ (bin centre)") -> plt.Figure:
    """Moments and peak of P(d | w_i) vs w_i (bin centres), one line per `hue` level.

    `fits` (optional) has columns `hue` (if given), slope, intercept, slope_lo, slope_hi and is
    drawn on the mean panel as the fitted line with its slope interval as a band.
    """
    quantities = quantities or {"mean": "mean of $d$", "std": "std of $d$", "skew": "skewness of $d$",
                                "peak": "peak (mode) of $d$"}
    _need(stats, ["bin_center"] + list(quantities) + ([hue] if hue else []), "conditional_moments")
    fig, axes = plt.subplots(1, len(quantities), figsize=(4 * len(quantities), 3.6), squeeze=False)
    palette = _hue_palette(stats, hue) if hue else None
    for ax, (col, name) in zip(axes[0], quantities.items()):
        sns.lineplot(stats, x="bin_center", y=col, hue=hue, palette=palette, marker="o", markersize=3,
                     errorbar=BAND, ax=ax, legend=col == list(quantities)[-1])
        ax.axhline(0, color="k", lw=0.7)
        ax.set(xlabel=xlabel, ylabel=name, title=name)
    if fits is not None:
        _draw_fits(axes[0, 0], stats, fits, hue, palette)
    return fig


def _draw_fits(ax, stats, fits, hue, palette) -> None:
    _need(fits, ["slope", "intercept", "slope_lo", "slope_hi"] + ([hue] if hue else []), "conditional_moments fits")
    x = np.linspace(stats["bin_center"].min(), stats["bin_center"].max(), 50)
    for _, f in fits.iterrows():
        colour = palette[f[hue]] if hue else "k"
        ax.plot(x, f["intercept"] + f["slope"] * x, ls="--", color=colour, lw=1)
        lo, hi = f["intercept"] + f["slope_lo"] * x, f["intercept"] + f["slope_hi"] * x
        ax.fill_between(x, np.minimum(lo, hi), np.maximum(lo, hi), color=colour, alpha=0.15, lw=0)


# ----------------------------------------------------------------------------- evolution (Fig. 5)

def deviation_evolution(quantiles: pd.DataFrame, metrics: pd.DataFrame, *, events: dict | None = None,
                        ylabel: str = "deviation $d = w - w_i$", title: str = "") -> plt.Figure:
    """Quantiles of the deviation vs epoch (median, IQR, 2-98 band) beside the loss, events as lines.

    `quantiles` has columns epoch, q02, q25, median, q75, q98; `events` maps a label to an epoch.
    """
    _need(quantiles, ["epoch", "q02", "q25", "median", "q75", "q98"], "deviation_evolution")
    fig, (ax_l, ax_d) = plt.subplots(1, 2, figsize=(11, 3.8))
    _loss_axes(ax_l, metrics)
    pal = sns.color_palette("colorblind")
    q = quantiles.sort_values("epoch")
    ax_d.fill_between(q["epoch"], q["q02"], q["q98"], color=pal[0], alpha=0.2, lw=0, label="2-98 %")
    ax_d.fill_between(q["epoch"], q["q25"], q["q75"], color=pal[0], alpha=0.4, lw=0, label="interquartile range")
    ax_d.plot(q["epoch"], q["median"], color=pal[0], marker="o", ms=3, lw=1.5, label="median")
    ax_d.set(xlabel="epoch", ylabel=ylabel)
    for k, (name, epoch) in enumerate((events or {}).items()):
        if epoch is None or not np.isfinite(epoch):
            continue
        for ax in (ax_l, ax_d):
            ax.axvline(epoch, color=pal[3 + k], ls="--", lw=1.2, label=f"{name} (epoch {epoch:g})")
    ax_l.legend(fontsize="small")
    ax_d.legend(fontsize="small")
    fig.suptitle(title)
    return fig


def probe_curves(curves: pd.DataFrame, columns: dict, *, hue: str = "width", ylabel: str,
                 logy: bool = True) -> plt.Figure:
    """Per-epoch probes (e.g. relative distance per layer) vs epoch, one panel per column: mean over seeds,
    band from min to max."""
    _need(curves, ["epoch", hue] + list(columns), "probe_curves")
    fig, axes = plt.subplots(1, len(columns), figsize=(4.6 * len(columns), 3.6), sharey=True, squeeze=False)
    palette = _hue_palette(curves, hue)
    for ax, (col, name) in zip(axes[0], columns.items()):
        sns.lineplot(curves, x="epoch", y=col, hue=hue, palette=palette, errorbar=RANGE if logy else BAND,
                     ax=ax, lw=1.2, legend=col == list(columns)[-1])
        if logy:
            ax.set_yscale("log")
        ax.set(title=name, xlabel="epoch", ylabel=ylabel)
    return fig


def exponents(table: pd.DataFrame, *, x: str = "level", xlabel: str = "train loss reached (nats, log scale)",
              references: dict | None = None) -> plt.Figure:
    """Fitted power-law exponents with their confidence intervals vs `x`, reference exponents as lines."""
    _need(table, [x, "exponent", "exponent_lo", "exponent_hi"], "exponents")
    fig, ax = plt.subplots(figsize=(5.8, 3.8))
    t = table.sort_values(x)
    err = np.vstack([t["exponent"] - t["exponent_lo"], t["exponent_hi"] - t["exponent"]])
    ax.errorbar(t[x], t["exponent"], yerr=err, fmt="o-", capsize=3, color=sns.color_palette("colorblind")[0],
                label="fitted exponent (95% CI)")
    for style, (name, value) in zip(["--", ":", "-."], (references or {}).items()):
        ax.axhline(value, color="k", ls=style, lw=1.1, label=name)
    ax.set_xscale("log")
    ax.set(xlabel=xlabel, ylabel="exponent of deviation ~ width$^{exponent}$")
    ax.legend(fontsize="small")
    return fig

"""Deviation d = w_final - w_init: statistics conditional on w_init, global measures, the linear law,
evolution in time and deviation at matched loss.

Inputs are plain arrays. Wherever a pair (w_init, w_final) is taken, each side may be an array of any
shape, a dict name -> array (one network's layers) or a list of those (many seeds); both sides must
have the same structure and shapes, and everything is pooled. Pairs with a non-finite value on either
side are left out and counted.
"""
from __future__ import annotations

import numbers
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats as _stats

from .errors import ConfigError
from .probes import PROBES


class InputError(ConfigError, ValueError):
    """Arrays or parameters given to an analysis function cannot be used."""


QUANTILES = (0.02, 0.25, 0.5, 0.75, 0.98)
STAT_COLUMNS = ("bin_left", "bin_right", "bin_center", "count", "mean", "std", "skew", "median",
                "q02", "q25", "q75", "q98", "peak")
GLOBAL_COLUMNS = ("layer", "n", "n_nonfinite", "init_std", "mean_abs_dev", "rms_dev", "max_abs_dev",
                  "rel_dist", "cosine", "corr", "frac_sign_changed")
NTK_EXPONENT = -0.5  # lazy training / NTK: relative weight change ~ width**-0.5 at fixed loss


# ----------------------------------------------------------------------------------------------
# input handling

def _is_collection(obj) -> bool:
    if isinstance(obj, Mapping):
        return True
    if isinstance(obj, (list, tuple)):
        return any(not isinstance(o, numbers.Number) for o in obj)
    return False


def _leaves(obj, what: str, path: str = "") -> list[tuple[str, np.ndarray]]:
    """Flatten nested dicts/lists of arrays into (path, float64 array) pairs in a fixed order."""
    if isinstance(obj, Mapping):
        if not obj:
            raise InputError(f"{what}{path} is an empty dict; pass at least one array")
        return [leaf for k in sorted(obj, key=str) for leaf in _leaves(obj[k], what, f"{path}[{k!r}]")]
    if _is_collection(obj):
        if not obj:
            raise InputError(f"{what}{path} is an empty list; pass at least one array")
        return [leaf for i, o in enumerate(obj) for leaf in _leaves(o, what, f"{path}[{i}]")]
    try:
        arr = np.asarray(obj, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{what}{path} is not a numeric array ({exc})") from None
    return [(path, arr)]


def _pair(w_init, w_final, *, groups: bool = False):
    """Pool matching arrays into flat finite x (init), y (final); also group ids per top-level item."""
    li, lf = _leaves(w_init, "w_init"), _leaves(w_final, "w_final")
    pi, pf = [p for p, _ in li], [p for p, _ in lf]
    if pi != pf:
        only_i = ", ".join(f"w_init{p}" for p in sorted(set(pi) - set(pf))) or "-"
        only_f = ", ".join(f"w_final{p}" for p in sorted(set(pf) - set(pi))) or "-"
        detail = f"only on one side: {only_i}; {only_f}" if only_i != "-" or only_f != "-" else \
            f"{len(pi)} vs {len(pf)} arrays"
        raise InputError(f"w_init and w_final have different structure ({detail}); "
                         "pass the same layers/seeds on both sides")
    for (p, a), (_, b) in zip(li, lf):
        if a.shape != b.shape:
            raise InputError(f"shape mismatch at w_init{p} {a.shape} vs w_final{p} {b.shape}; "
                             "the two sides must hold the same weights")
    n_total = sum(a.size for _, a in li)
    if n_total == 0:
        raise InputError("w_init and w_final are empty; pass at least one weight")
    x = np.concatenate([a.ravel() for _, a in li]) if len(li) > 1 else li[0][1].ravel()
    y = np.concatenate([b.ravel() for _, b in lf]) if len(lf) > 1 else lf[0][1].ravel()
    g = None
    if groups:
        top = [p.split("]")[0] for p in pi]
        ids = {t: i for i, t in enumerate(dict.fromkeys(top))}
        g = np.repeat(np.array([ids[t] for t in top], dtype=np.int64), [a.size for _, a in li])
    ok = np.isfinite(x) & np.isfinite(y)
    n_bad = int(n_total - np.count_nonzero(ok))
    if n_bad:
        x, y = x[ok], y[ok]
        g = g[ok] if g is not None else None
    if x.size == 0:
        raise InputError(f"all {n_total} weight pairs are non-finite (NaN/inf); nothing to measure")
    return x, y, n_bad, g


def _check_int(name: str, value, low: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise InputError(f"{name} must be an integer >= {low}, got {value!r}")
    return int(value)


def _check_range(rng, what: str) -> tuple[float, float] | None:
    if rng is None:
        return None
    try:
        lo, hi = (float(v) for v in rng)
    except (TypeError, ValueError):
        raise InputError(f"{what} must be a pair (low, high), got {rng!r}") from None
    if not (np.isfinite(lo) and np.isfinite(hi) and hi > lo):
        raise InputError(f"{what} must be finite with high > low, got {rng!r}")
    return lo, hi


def _edges(x: np.ndarray, bins, binning: str, rng) -> np.ndarray:
    """Bin edges over x: equal width over [min, max] (or rng), equal counts, or given edges."""
    if binning not in ("width", "quantile"):
        raise InputError(f"binning must be 'width' or 'quantile', got {binning!r}")
    if not isinstance(bins, numbers.Integral) or isinstance(bins, bool):
        edges = np.asarray(bins, dtype=np.float64)
        if edges.ndim != 1 or edges.size < 2 or not np.all(np.isfinite(edges)) \
                or not np.all(np.diff(edges) > 0):
            raise InputError("bins must be an integer >= 1 or a 1-D increasing array of >= 2 finite edges")
        return edges
    nb = _check_int("bins", bins)
    if binning == "width":
        lo, hi = rng if rng is not None else (float(x.min()), float(x.max()))
        if lo == hi:  # numpy's convention for a constant sample
            lo, hi = lo - 0.5, hi + 0.5
        return np.linspace(lo, hi, nb + 1)
    return np.quantile(x, np.linspace(0.0, 1.0, nb + 1))


def _bin_index(x: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Bin of each x: [e_i, e_i+1) with the last bin closed; -1 outside (scipy's binned_statistic rule)."""
    nb = edges.size - 1
    idx = np.searchsorted(edges, x, side="right") - 1
    idx[x == edges[-1]] = nb - 1
    idx[(x < edges[0]) | (x > edges[-1])] = -1
    return idx


# ----------------------------------------------------------------------------------------------
# grouped statistics (sort-based, no loop over weights)

def _grouped_sort(b: np.ndarray, d: np.ndarray, nb: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """d sorted by bin then value; counts and start offsets per bin."""
    order = np.argsort(d)
    small = np.int16 if nb < 2 ** 15 else np.int64  # 16-bit keys get numpy's O(n) radix sort
    o2 = np.argsort(b[order].astype(small), kind="stable")
    s = d[order][o2]
    counts = np.bincount(b, minlength=nb)
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    return s, counts, starts


def _group_quantile(s, starts, counts, q: float) -> np.ndarray:
    """Per-group quantile with numpy's default 'linear' method; NaN for empty groups."""
    out = np.full(counts.shape, np.nan)
    ok = counts > 0
    n, st = counts[ok], starts[ok]
    h = (n - 1) * q
    j = np.floor(h).astype(np.int64)
    g = h - j
    a = s[st + j]
    b = s[st + np.minimum(j + 1, n - 1)]
    diff = b - a
    out[ok] = np.where(g >= 0.5, b - diff * (1 - g), a + diff * g)
    return out


def _group_peak(s, starts, counts, lo, hi, sd, median, n_fine) -> np.ndarray:
    """Mode of each group: histogram of ``n_fine`` bins over [lo, hi], Gaussian smoothing of bandwidth
    sd * n**(-1/7) (the rate that minimises the error of a kernel mode estimate), then a parabola
    through the highest smoothed bin and its neighbours. Groups with sd == 0 take their median."""
    nb = counts.size
    span = hi - lo
    usable = (counts > 0) & (span > 0) & (sd > 0)
    peak = np.where(counts > 0, median, np.nan)
    if not usable.any():
        return peak
    width = np.where(usable, span, 1.0) / n_fine
    base = np.where(usable, lo, 0.0)
    gid = np.repeat(np.arange(nb), counts)
    local = np.floor((s - base[gid]) / width[gid]).astype(np.int64)
    local[(local == n_fine) & (s <= hi[gid])] -= 1  # the upper edge belongs to the last fine bin
    keep = usable[gid] & (local >= 0) & (local < n_fine)
    h = np.bincount(gid[keep] * n_fine + local[keep], minlength=nb * n_fine).reshape(nb, n_fine)
    sigma = np.where(usable, sd * np.maximum(counts, 1) ** (-1 / 7), 0.0) / width  # in fine bins
    m = 4 * n_fine  # zero padding keeps the circular convolution from wrapping around
    f = np.fft.rfftfreq(m)
    smooth = np.fft.irfft(np.fft.rfft(h, n=m, axis=1) * np.exp(-2 * (np.pi * f[None, :] * sigma[:, None]) ** 2),
                          n=m, axis=1)[:, :n_fine]
    top = np.argmax(smooth, axis=1)
    rows = np.arange(nb)
    c0 = smooth[rows, top]
    cl = smooth[rows, np.maximum(top - 1, 0)]
    cr = smooth[rows, np.minimum(top + 1, n_fine - 1)]
    denom = cl - 2.0 * c0 + cr
    inner = (top > 0) & (top < n_fine - 1) & (denom < 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        off = np.where(inner, 0.5 * (cl - cr) / denom, 0.0)
    off = np.clip(off, -0.5, 0.5)
    return np.where(usable, base + (top + 0.5 + off) * width, peak)


def _moments(b: np.ndarray, d: np.ndarray, nb: int):
    """Count, mean, biased std and skew (scipy.stats.skew conventions) of d per bin."""
    n = np.bincount(b, minlength=nb).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = np.bincount(b, d, minlength=nb) / n
        dc = d - mean[b]
        m2 = np.bincount(b, dc * dc, minlength=nb) / n
        m3 = np.bincount(b, dc * dc * dc, minlength=nb) / n
        skew = np.where(m2 <= (np.finfo(np.float64).eps * mean) ** 2, np.nan, m3 / m2 ** 1.5)
    return n.astype(np.int64), mean, np.sqrt(m2), skew


def conditional_stats(w_init, w_final, bins=50, *, binning: str = "width", range=None,
                      peak_bins: int = 512, of: str = "deviation") -> pd.DataFrame:
    """Statistics of d = w_final - w_init in bins of w_init, one row per bin (columns STAT_COLUMNS).

    ``of="final"``: the same statistics of w_final itself (the median and bands of Fig. 3).

    ``bins``: number of bins (equal width over ``range`` or the range of w_init; equal counts with
    ``binning="quantile"``) or an array of edges. ``std`` and ``skew`` are biased (numpy.std,
    scipy.stats.skew defaults); quantiles use numpy's linear method; ``peak`` is the mode of d: a
    ``peak_bins``-bin histogram between the bin's q02 and q98, smoothed with a Gaussian of width
    robust_sd * count**(-1/7) (robust_sd = min(std, IQR / 1.349)), refined by a parabola.
    ``df.attrs``: n_total, n_nonfinite (pairs left out), n_outside (outside ``range``), n_used.

    >>> wi = np.array([-1.0, -0.5, 0.5, 1.0, np.nan])
    >>> df = conditional_stats(wi, 1.5 * wi, bins=2)
    >>> df[["bin_center", "count", "mean", "median"]].values.tolist()
    [[-0.5, 2.0, -0.375, -0.375], [0.5, 2.0, 0.375, 0.375]]
    >>> df.attrs["n_nonfinite"]
    1
    """
    rng = _check_range(range, "range")
    peak_bins = _check_int("peak_bins", peak_bins, 8)
    if of not in ("deviation", "final"):
        raise InputError(f"of={of!r}: use 'deviation' (d = w_final - w_init) or 'final' (w_final)")
    x, y, n_bad, _ = _pair(w_init, w_final)
    n_total = x.size + n_bad
    if rng is not None:
        inside = (x >= rng[0]) & (x <= rng[1])
        if not inside.any():
            raise InputError(f"no finite w_init falls inside range={range!r}")
        x, y = x[inside], y[inside]
    edges = _edges(x, bins, binning, rng)
    nb = edges.size - 1
    b = _bin_index(x, edges)
    inside = b >= 0
    n_out = n_total - n_bad - int(np.count_nonzero(inside))
    if n_out:
        b, x, y = b[inside], x[inside], y[inside]
    d = y - x if of == "deviation" else y
    count, mean, std, skew = _moments(b, d, nb)
    s, counts, starts = _grouped_sort(b, d, nb)
    q = {name: _group_quantile(s, starts, counts, p)
         for name, p in (("q02", 0.02), ("q25", 0.25), ("median", 0.5), ("q75", 0.75), ("q98", 0.98))}
    robust_sd = np.fmin(std, (q["q75"] - q["q25"]) / 1.349)
    peak = _group_peak(s, starts, counts, q["q02"], q["q98"], robust_sd, q["median"], peak_bins)
    df = pd.DataFrame({
        "bin_left": edges[:-1], "bin_right": edges[1:], "bin_center": 0.5 * (edges[:-1] + edges[1:]),
        "count": count, "mean": mean, "std": std, "skew": skew, "median": q["median"],
        "q02": q["q02"], "q25": q["q25"], "q75": q["q75"], "q98": q["q98"], "peak": peak,
    })
    df.attrs.update(n_total=int(n_total), n_nonfinite=n_bad, n_outside=int(n_out),
                    n_used=int(d.size), binning=binning if isinstance(bins, numbers.Integral) else "edges")
    return df


# ----------------------------------------------------------------------------------------------
# joint and conditional distributions

@dataclass(frozen=True, eq=False)
class JointHistogram:
    """2-D histogram of (w_init, w_final): counts[i, j] for x_edges[i] <= w_init < x_edges[i+1]."""

    counts: np.ndarray
    x_edges: np.ndarray
    y_edges: np.ndarray
    n_nonfinite: int
    n_outside: int

    @property
    def x_centers(self) -> np.ndarray:
        """Centres of the w_init bins."""
        return 0.5 * (self.x_edges[:-1] + self.x_edges[1:])

    @property
    def y_centers(self) -> np.ndarray:
        """Centres of the w_final bins."""
        return 0.5 * (self.y_edges[:-1] + self.y_edges[1:])

    @property
    def density(self) -> np.ndarray:
        """Probability density per cell, NaN where empty (for a log colour scale)."""
        area = np.outer(np.diff(self.x_edges), np.diff(self.y_edges))
        dens = self.counts / (self.counts.sum() * area)
        return np.where(self.counts > 0, dens, np.nan)


def joint_histogram(w_init, w_final, bins=100, *, range=None) -> JointHistogram:
    """Joint 2-D histogram of (w_init, w_final), ready for ``pcolormesh(x_edges, y_edges, density.T)``.

    ``bins``: int or (nx, ny); ``range``: ((x0, x1), (y0, y1)), default the data ranges.

    >>> h = joint_histogram([0.0, 0.5, 1.0], [0.0, 0.5, 1.0], bins=2)
    >>> h.counts.tolist()
    [[1, 0], [0, 2]]
    """
    x, y, n_bad, _ = _pair(w_init, w_final)
    try:
        nbx, nby = (bins, bins) if isinstance(bins, numbers.Integral) else tuple(bins)
    except (TypeError, ValueError):
        raise InputError(f"bins must be an integer or a pair (nx, ny), got {bins!r}") from None
    nbx, nby = _check_int("bins (x)", nbx), _check_int("bins (y)", nby)
    try:
        rx, ry = (None, None) if range is None else tuple(range)
    except (TypeError, ValueError):
        raise InputError(f"range must be ((x0, x1), (y0, y1)), got {range!r}") from None
    ex = _edges(x, nbx, "width", _check_range(rx, "range[0]"))
    ey = _edges(y, nby, "width", _check_range(ry, "range[1]"))
    ix, iy = _bin_index(x, ex), _bin_index(y, ey)
    ok = (ix >= 0) & (iy >= 0)
    counts = np.bincount(ix[ok] * nby + iy[ok], minlength=nbx * nby).reshape(nbx, nby)
    return JointHistogram(counts, ex, ey, n_bad, int(x.size - np.count_nonzero(ok)))


def default_strips(w_init, frac: float = 0.1) -> list[tuple[float, float]]:
    """Three strips of w_init of width frac * range: most negative, around zero, most positive.

    >>> default_strips([-1.0, 1.0])
    [(-1.0, -0.8), (-0.1, 0.1), (0.8, 1.0)]
    """
    if not 0 < frac <= 1 / 3:
        raise InputError(f"strip fraction must be in (0, 1/3], got {frac!r}")
    x = np.concatenate([a.ravel() for _, a in _leaves(w_init, "w_init")])
    x = x[np.isfinite(x)]
    if x.size == 0:
        raise InputError("w_init has no finite values")
    lo, hi = float(x.min()), float(x.max())
    w = frac * (hi - lo)
    c = 0.0 if lo < 0 < hi else 0.5 * (lo + hi)
    return [(lo, lo + w), (c - w / 2, c + w / 2), (hi - w, hi)]


def peak_offset(stats: pd.DataFrame, min_count: int = 1) -> float:
    """Count-weighted mean over bins of |peak of d| / IQR(d): how far the mode of d sits from zero.

    Bins with fewer than ``min_count`` weights are left out (all non-empty bins if none has that
    many), and so are bins with a zero IQR; NaN when no bin is left.

    >>> peak_offset(pd.DataFrame({"count": [10, 30], "peak": [0.1, -0.2], "q25": [-1.0, -1.0], "q75": [1.0, 1.0]}))
    0.0875
    """
    use = stats["count"] >= min_count
    use = use if use.any() else stats["count"] > 0
    iqr = stats["q75"] - stats["q25"]
    use &= iqr > 0
    if not use.any():
        return float("nan")
    return float(np.average((stats["peak"].abs() / iqr)[use], weights=stats["count"][use]))


def conditional_density(w_init, w_final, strips=None, *, bins: int = 60, of: str = "final",
                        range=None) -> pd.DataFrame:
    """P(w_final | w_init in strip) (``of="final"``) or P(d | strip) (``of="deviation"``) as densities.

    Long table, one row per (strip, value bin): strip, strip_left, strip_right, n, x_left, x_right,
    x_center, density (integrates to 1 per strip). ``strips``: list of (low, high) of w_init, default
    ``default_strips``; value bins span each strip's own data unless ``range`` is given.

    >>> df = conditional_density([0.0, 0.1, 0.9, 1.0], [0.0, 0.2, 0.9, 1.0], [(0, 0.5)], bins=2)
    >>> df[["n", "x_center", "density"]].round(3).values.tolist()
    [[2.0, 0.05, 5.0], [2.0, 0.15, 5.0]]
    """
    if of not in ("final", "deviation"):
        raise InputError(f"of must be 'final' or 'deviation', got {of!r}")
    bins = _check_int("bins", bins)
    rng = _check_range(range, "range")
    x, y, _, _ = _pair(w_init, w_final)
    v = y if of == "final" else y - x
    strips = default_strips(x) if strips is None else [_check_range(s, "each strip") for s in strips]
    frames = []
    for i, (lo, hi) in enumerate(strips):  # a handful of strips, each vectorised
        sel = v[(x >= lo) & (x <= hi)]
        if sel.size == 0:
            raise InputError(f"strip {i} [{lo:g}, {hi:g}] holds no weights; choose strips inside "
                             f"the range of w_init [{x.min():g}, {x.max():g}]")
        dens, e = np.histogram(sel, bins=bins, range=rng, density=True)
        frames.append(pd.DataFrame({"strip": i, "strip_left": lo, "strip_right": hi, "n": float(sel.size),
                                    "x_left": e[:-1], "x_right": e[1:], "x_center": 0.5 * (e[:-1] + e[1:]),
                                    "density": dens}))
    return pd.concat(frames, ignore_index=True)


# ----------------------------------------------------------------------------------------------
# global measures

def _layer_keys(weights: Mapping, layers) -> list[str]:
    if layers is None:
        keys = [k for k in weights if str(k).endswith(".weight")]
        return keys or list(weights)
    keys = []
    for name in ([layers] if isinstance(layers, str) else layers):
        key = name if name in weights else f"{name}.weight"
        if key not in weights:
            raise InputError(f"layer {name!r} not found; available: {sorted(weights)}")
        keys.append(key)
    return keys


def _measures(x: np.ndarray, y: np.ndarray) -> dict:
    d = y - x
    nx, ny, nd = np.linalg.norm(x), np.linalg.norm(y), np.linalg.norm(d)
    with np.errstate(divide="ignore", invalid="ignore"):
        nz = x != 0
        return {
            "n": int(x.size), "init_std": float(np.std(x)),
            "mean_abs_dev": float(np.mean(np.abs(d))), "rms_dev": float(nd / np.sqrt(x.size)),
            "max_abs_dev": float(np.max(np.abs(d))),
            "rel_dist": float(nd / nx) if nx > 0 else np.nan,
            "cosine": float(x @ y / (nx * ny)) if nx > 0 and ny > 0 else np.nan,
            "corr": float(np.corrcoef(x, y)[0, 1]) if x.size > 1 and np.ptp(x) > 0 and np.ptp(y) > 0 else np.nan,
            "frac_sign_changed": float(np.mean(x[nz] * y[nz] < 0)) if nz.any() else np.nan,
        }


def global_measures(init: Mapping, final: Mapping, layers=None) -> pd.DataFrame:
    """One row per layer: columns GLOBAL_COLUMNS, for weight matrices (``*.weight``) unless ``layers``.

    rel_dist = ||d||_F / ||w_init||_F; cosine and corr (Pearson) compare w_final with w_init;
    frac_sign_changed counts w_init * w_final < 0 among w_init != 0. Non-finite pairs are left out.

    >>> g = global_measures({"fc1.weight": np.array([1.0, -2.0])}, {"fc1.weight": np.array([1.5, 1.0])})
    >>> g[["layer", "mean_abs_dev", "frac_sign_changed"]].values.tolist()
    [['fc1', 1.75, 0.5]]
    """
    if not isinstance(init, Mapping) or not isinstance(final, Mapping):
        raise InputError("global_measures takes two dicts name -> array (e.g. run.weights('init'))")
    rows = []
    for key in _layer_keys(init, layers):
        if key not in final:
            raise InputError(f"layer {key!r} is in init but not in final; available: {sorted(final)}")
        x, y, n_bad, _ = _pair(init[key], final[key])
        name = key[: -len(".weight")] if str(key).endswith(".weight") else str(key)
        rows.append({"layer": name, "n_nonfinite": n_bad, **_measures(x, y)})
    return pd.DataFrame(rows, columns=list(GLOBAL_COLUMNS))


# ----------------------------------------------------------------------------------------------
# the linear law and the skew trend

def _fit_from_sums(s: np.ndarray):
    """Slope and intercept of y on x from sums (n, Sx, Sy, Sxx, Sxy) along the last axis."""
    n, sx, sy, sxx, sxy = (s[..., i] for i in range(5))
    with np.errstate(divide="ignore", invalid="ignore"):
        mx, my = sx / n, sy / n
        slope = (sxy / n - mx * my) / (sxx / n - mx * mx)
    return slope, my - slope * mx


def _skew_from_sums(m: np.ndarray):
    """Biased skew from per-bin sums (n, S1, S2, S3) of shifted values along the last axis."""
    n, s1, s2, s3 = (m[..., i] for i in range(4))
    with np.errstate(divide="ignore", invalid="ignore"):
        mu = s1 / n
        m2 = s2 / n - mu * mu
        m3 = s3 / n - 3 * mu * s2 / n + 2 * mu ** 3
        return m3 / m2 ** 1.5


def _weighted_slope(z: np.ndarray, v: np.ndarray, w: np.ndarray):
    """Weighted least-squares slope of v on z along the last axis (NaN entries get weight 0)."""
    w = np.where(np.isfinite(v), w, 0.0)
    v = np.where(np.isfinite(v), v, 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        sw = w.sum(-1)
        mz, mv = (w * z).sum(-1) / sw, (w * v).sum(-1) / sw
        return (w * (z - mz[..., None]) * (v - mv[..., None])).sum(-1) / (w * (z - mz[..., None]) ** 2).sum(-1)


def linear_law(w_init, w_final, *, by: str = "weights", n_boot: int = 1000, ci: float = 0.95,
               bins: int = 20, min_count: int = 30, n_blocks: int = 200, seed: int = 0) -> pd.Series:
    """Fit E[d | w_init] = alpha * w_init + beta (least squares) and the trend of skew(d | w_init).

    skew_slope is the count-weighted slope of the per-bin skew (``bins`` equal-width bins of w_init
    holding >= ``min_count`` weights) against w_init / std(w_init). Percentile-bootstrap CIs at level
    ``ci``: ``by="weights"`` resamples ``n_blocks`` random blocks of weights, ``by="seeds"`` resamples
    the top-level items of list inputs (one per seed). Returns a Series: alpha, alpha_lo, alpha_hi,
    beta, beta_lo, beta_hi, skew_slope, skew_slope_lo, skew_slope_hi, n, n_groups, n_nonfinite.

    >>> rng = np.random.default_rng(1)
    >>> wi = rng.uniform(-1, 1, 50_000)
    >>> law = linear_law(wi, wi + 0.2 * wi + rng.normal(0, 0.05, wi.size), n_boot=200)
    >>> bool(law.alpha_lo < 0.2 < law.alpha_hi), round(float(law.alpha), 2)
    (True, 0.2)
    """
    if by not in ("weights", "seeds"):
        raise InputError(f"by must be 'weights' or 'seeds', got {by!r}")
    n_boot = _check_int("n_boot", n_boot, 10)
    bins = _check_int("bins", bins)
    n_blocks = _check_int("n_blocks", n_blocks, 2)
    if not 0 < ci < 1:
        raise InputError(f"ci must be in (0, 1), got {ci!r}")
    x, y, n_bad, g = _pair(w_init, w_final, groups=(by == "seeds"))
    if x.size < 3 or np.ptp(x) == 0:
        raise InputError("linear_law needs at least 3 weights with different w_init values")
    rng = np.random.default_rng(seed)
    if by == "weights":
        n_groups = min(n_blocks, x.size)
        g = rng.permutation(np.arange(x.size) % n_groups)
    else:
        n_groups = int(g.max()) + 1
        if n_groups < 2:
            raise InputError("by='seeds' needs a list of >= 2 arrays (one per seed) on each side")
    d = y - x
    xc, dc = x - x.mean(), d - d.mean()
    cols = np.stack([np.ones_like(xc), xc, dc, xc * xc, xc * dc])
    sums = np.stack([np.bincount(g, c, minlength=n_groups) for c in cols], axis=-1)  # (G, 5)
    # per (group, bin) moment sums of d shifted by each bin's mean, for the skew trend
    edges = _edges(x, bins, "width", None)
    b = _bin_index(x, edges)
    cnt, mean_b, _, _ = _moments(b, d, bins)
    sh = d - np.nan_to_num(mean_b)[b]
    gb = g * bins + b
    msum = np.stack([np.bincount(gb, sh ** p, minlength=n_groups * bins) for p in range(4)], axis=-1)
    msum = msum.reshape(n_groups, bins, 4)
    z = 0.5 * (edges[:-1] + edges[1:]) / np.std(x)
    wts = np.where(cnt >= min_count, cnt, 0).astype(np.float64)

    def estimate(sm, ms):
        a, c = _fit_from_sums(sm)
        return a, c, _weighted_slope(z, _skew_from_sums(ms), wts)

    alpha, beta0, sk = estimate(sums.sum(0), msum.sum(0))
    boot = rng.multinomial(n_groups, np.full(n_groups, 1.0 / n_groups), size=n_boot).astype(np.float64)
    ba, bb, bs = estimate(boot @ sums, np.einsum("bg,gkm->bkm", boot, msum))
    lo_q, hi_q = 100 * (1 - ci) / 2, 100 * (1 + ci) / 2
    beta = beta0 + d.mean() - alpha * x.mean()  # undo the centring of x and d
    bbeta = bb + d.mean() - ba * x.mean()
    out = {"alpha": alpha, "alpha_lo": np.nanpercentile(ba, lo_q), "alpha_hi": np.nanpercentile(ba, hi_q),
           "beta": beta, "beta_lo": np.nanpercentile(bbeta, lo_q), "beta_hi": np.nanpercentile(bbeta, hi_q),
           "skew_slope": sk, "skew_slope_lo": np.nanpercentile(bs, lo_q) if np.isfinite(bs).any() else np.nan,
           "skew_slope_hi": np.nanpercentile(bs, hi_q) if np.isfinite(bs).any() else np.nan,
           "n": x.size, "n_groups": n_groups, "n_nonfinite": n_bad}
    return pd.Series({k: float(v) for k, v in out.items()}, name="linear_law")


# ----------------------------------------------------------------------------------------------
# evolution in time

def _qname(q: float) -> str:
    return "median" if q == 0.5 else f"q{round(q * 100):02d}"


def deviation_quantiles(init, snapshots: Mapping, quantiles=QUANTILES) -> pd.DataFrame:
    """Quantiles of d against epoch, one row per snapshot epoch: epoch, n, n_nonfinite, mean, std,
    mean_abs, rms, max_abs and q02, q25, median, q75, q98 (names from ``quantiles``: q{100 q}, the
    0.5 quantile as median, as in ``conditional_stats``).

    ``snapshots`` maps epoch -> weights with the same structure as ``init``.

    >>> df = deviation_quantiles(np.zeros(5), {1: np.arange(5.0), 2: 2 * np.arange(5.0)}, quantiles=(0.5,))
    >>> df[["epoch", "median", "max_abs"]].values.tolist()
    [[1.0, 2.0, 4.0], [2.0, 4.0, 8.0]]
    """
    if not isinstance(snapshots, Mapping) or not snapshots:
        raise InputError("snapshots must be a non-empty dict epoch -> weights")
    qs = np.asarray(quantiles, dtype=np.float64)
    if qs.ndim != 1 or qs.size == 0 or np.any((qs < 0) | (qs > 1)):
        raise InputError(f"quantiles must be values in [0, 1], got {quantiles!r}")
    rows = []
    for epoch in sorted(snapshots):  # one pass per snapshot, vectorised inside
        x, y, n_bad, _ = _pair(init, snapshots[epoch])
        d = y - x
        row = {"epoch": int(epoch), "n": d.size, "n_nonfinite": n_bad, "mean": d.mean(), "std": d.std(),
               "mean_abs": np.abs(d).mean(), "rms": np.sqrt(np.mean(d * d)), "max_abs": np.abs(d).max()}
        row.update(zip(map(_qname, qs), np.quantile(d, qs)))
        rows.append(row)
    return pd.DataFrame(rows)


def _layer_key(weights: Mapping, layer: str) -> str:
    return _layer_keys(weights, [layer])[0]


def snapshot_quantiles(run, layer: str = "fc2", quantiles=QUANTILES) -> pd.DataFrame:
    """``deviation_quantiles`` of one layer over all of a run's snapshot epochs (Run API).

    >>> snapshot_quantiles(store.run(cfg), "fc2")[["epoch", "q02", "median", "q98"]]  # doctest: +SKIP
    """
    init = run.weights("init")
    key = _layer_key(init, layer)
    snaps = {e: run.weights(int(e))[key] for e in run.snapshot_epochs}
    return deviation_quantiles(init[key], snaps, quantiles)




def evolution_table(run, layer: str = "fc2", quantiles=QUANTILES) -> pd.DataFrame:
    """Per-epoch losses and deviation probes of one layer, with the quantiles of d at snapshot epochs.

    One row per metrics epoch: epoch, train_loss, test_loss, the probes PROBES of ``layer`` (those
    present in metrics.csv) and q02 ... q98 from ``snapshot_quantiles`` (NaN between snapshots).
    The probes keep their metrics.csv names without the layer prefix (rel_dist, rms_dev, ...).

    >>> evolution_table(store.run(cfg), "fc2")  # doctest: +SKIP
    """
    m = run.metrics
    cols = {f"{layer}_{p}": p for p in PROBES if f"{layer}_{p}" in m.columns}
    keep = ["epoch"] + [c for c in ("train_loss", "test_loss") if c in m.columns] + list(cols)
    probes = m[keep].rename(columns=cols)
    q = snapshot_quantiles(run, layer, quantiles)[["epoch"] + [_qname(x) for x in quantiles]]
    return probes.merge(q, on="epoch", how="left")


def detect_jump(epochs, values, *, min_factor: float = 1.5, min_z: float = 5.0,
                start=None, stop=None) -> dict:
    """The largest one-step rise of log(values) between consecutive recorded epochs.

    Candidates are steps that end at an epoch in [start, stop] and start from a positive finite value;
    a non-finite value counts as +inf (a jump to NaN/inf is the largest possible). ``found`` is True
    when the rise is a factor >= ``min_factor`` and its robust z-score (against the median and MAD of
    all the series' finite log-steps) >= ``min_z``.
    Returns dict: found, epoch (where the higher value first appears), before, after, size, factor, z.

    >>> v = np.r_[np.linspace(1.0, 2.0, 30), np.linspace(8.0, 9.0, 30)]
    >>> j = detect_jump(np.arange(60), v)
    >>> j["found"], j["epoch"], round(j["factor"], 2)
    (True, 30, 4.0)
    """
    e = np.asarray(epochs, dtype=np.float64).ravel()
    v = np.asarray(values, dtype=np.float64).ravel()
    if e.shape != v.shape:
        raise InputError(f"epochs and values differ in length ({e.size} vs {v.size})")
    if e.size < 2:
        raise InputError("detect_jump needs at least two epochs")
    if not np.all(np.diff(e) > 0):
        raise InputError("epochs must be strictly increasing")
    with np.errstate(divide="ignore", invalid="ignore"):
        lv = np.where(np.isfinite(v), np.log(np.where(v > 0, v, np.nan)), np.inf)
        steps = lv[1:] - lv[:-1]
    valid = np.isfinite(lv[:-1]) & ~np.isnan(steps)  # steps from a positive finite value
    cand = valid.copy()
    if start is not None:
        cand &= e[1:] >= start
    if stop is not None:
        cand &= e[1:] <= stop
    if not cand.any():
        return {"found": False, "epoch": None, "before": np.nan, "after": np.nan, "size": np.nan,
                "factor": np.nan, "z": np.nan}
    idx = np.flatnonzero(cand)
    i = idx[int(np.argmax(steps[idx]))]
    base = steps[valid & np.isfinite(steps)]
    med = np.median(base) if base.size else 0.0
    mad = 1.4826 * np.median(np.abs(base - med)) if base.size else 0.0
    top = steps[i]
    if mad > 0:
        z = (top - med) / mad
    else:
        z = np.inf if top > med else 0.0
    before, after = v[i], v[i + 1]
    factor = float(np.exp(top)) if np.isfinite(top) else np.inf
    return {"found": bool(factor >= min_factor and z >= min_z), "epoch": int(e[i + 1]),
            "before": float(before), "after": float(after), "size": float(after - before),
            "factor": factor, "z": float(z)}


def _column(metrics: pd.DataFrame, name: str) -> np.ndarray:
    if not isinstance(metrics, pd.DataFrame):
        raise InputError("metrics must be a pandas DataFrame (run.metrics / metrics.csv)")
    if name not in metrics.columns:
        raise InputError(f"metrics has no column {name!r}; available: {list(metrics.columns)}")
    return metrics[name].to_numpy(dtype=np.float64)


def jump_lag(metrics: pd.DataFrame, *, deviation: str = "fc2_rel_dist", loss: str = "train_loss",
             loss_window=None, skip: int = 5, min_factor: float = 1.5, min_z: float = 5.0) -> dict:
    """Abrupt jump of a deviation probe and of the train loss, and the lag between them (in epochs).

    The loss jump is searched in ``loss_window`` (start, stop) if given (e.g. from divergence onset to
    the plateau), else everywhere; the deviation jump everywhere after the first ``skip`` epochs (the
    early growth from zero is not a jump). Returns dict: loss_epoch, loss_factor, loss_found,
    dev_epoch, dev_factor, dev_z, dev_found, lag (dev_epoch - loss_epoch, None if either is missing).

    >>> m = pd.DataFrame({"epoch": range(40), "train_loss": np.r_[np.linspace(2, 0.1, 25), 16.1 * np.ones(15)],
    ...                   "fc2_rel_dist": np.r_[np.linspace(0.01, 0.2, 26), np.ones(14)]})
    >>> r = jump_lag(m)
    >>> r["loss_epoch"], r["dev_epoch"], r["lag"]
    (25, 26, 1)
    """
    ep = _column(metrics, "epoch")
    lo = detect_jump(ep, _column(metrics, loss), min_factor=min_factor, min_z=min_z,
                     start=None if loss_window is None else loss_window[0],
                     stop=None if loss_window is None else loss_window[1])
    dv = detect_jump(ep, _column(metrics, deviation), min_factor=min_factor, min_z=min_z,
                     start=ep[0] + skip + 1)
    lag = None if lo["epoch"] is None or dv["epoch"] is None else dv["epoch"] - lo["epoch"]
    return {"loss_epoch": lo["epoch"], "loss_factor": lo["factor"], "loss_found": lo["found"],
            "dev_epoch": dv["epoch"], "dev_factor": dv["factor"], "dev_z": dv["z"], "dev_found": dv["found"],
            "lag": lag}


# ----------------------------------------------------------------------------------------------
# deviation at matched loss, and its scaling with width

def deviation_at_loss(metrics: pd.DataFrame, levels, *, deviation: str = "fc2_rel_dist",
                      loss: str = "train_loss") -> pd.DataFrame:
    """For each loss level L: the first epoch where ``loss`` <= L and the deviation probe there.

    Columns: level, epoch (NaN if never reached), loss, deviation. Non-finite losses never count.

    >>> m = pd.DataFrame({"epoch": [0, 1, 2], "train_loss": [2.3, 0.5, 0.1], "fc2_rel_dist": [0, 0.1, 0.3]})
    >>> deviation_at_loss(m, [1.0, 0.2, 0.01]).values.tolist()
    [[1.0, 1.0, 0.5, 0.1], [0.2, 2.0, 0.1, 0.3], [0.01, nan, nan, nan]]
    """
    lv = np.asarray(levels, dtype=np.float64).ravel()
    if lv.size == 0:
        raise InputError("levels is empty; pass at least one loss level")
    ep, ls, dv = _column(metrics, "epoch"), _column(metrics, loss), _column(metrics, deviation)
    with np.errstate(invalid="ignore"):
        reached = ls[None, :] <= lv[:, None]  # (levels, epochs); NaN compares False
    hit = reached.any(axis=1)
    first = np.argmax(reached, axis=1)
    return pd.DataFrame({"level": lv, "epoch": np.where(hit, ep[first], np.nan),
                         "loss": np.where(hit, ls[first], np.nan), "deviation": np.where(hit, dv[first], np.nan)})


def matched_loss_table(runs, levels, *, deviation: str = "fc2_rel_dist", loss: str = "train_loss") -> pd.DataFrame:
    """``deviation_at_loss`` for many runs (Run API), with width, seed, dataset, mask columns.

    >>> table = matched_loss_table(store.list(), [0.5, 0.1, 0.02])  # doctest: +SKIP
    >>> width_scaling(table)  # doctest: +SKIP
    """
    frames = []
    for run in runs:
        c = run.config
        df = deviation_at_loss(run.metrics, levels, deviation=deviation, loss=loss)
        frames.append(df.assign(width=c.width, seed=c.seed, dataset=c.dataset, mask=c.mask))
    if not frames:
        raise InputError("matched_loss_table got no runs")
    cols = ["dataset", "mask", "width", "seed", "level", "epoch", "loss", "deviation"]
    return pd.concat(frames, ignore_index=True)[cols]


def power_law_fit(x, y, *, ci: float = 0.95) -> pd.Series:
    """Fit y = prefactor * x**exponent by least squares in log-log, with a t-based CI on the exponent.

    Returns Series: exponent, exponent_lo, exponent_hi, prefactor, r2, n, n_x (distinct x).

    >>> x = np.array([10.0, 100, 1000, 10, 100, 1000])
    >>> fit = power_law_fit(x, 3 * x ** -0.5 * np.array([1.1, 0.9, 1.05, 0.92, 1.08, 0.95]))
    >>> round(float(fit.exponent), 2), bool(fit.exponent_lo < -0.5 < fit.exponent_hi)
    (-0.5, True)
    """
    xv, yv = np.asarray(x, dtype=np.float64).ravel(), np.asarray(y, dtype=np.float64).ravel()
    if xv.shape != yv.shape:
        raise InputError(f"x and y differ in length ({xv.size} vs {yv.size})")
    if not 0 < ci < 1:
        raise InputError(f"ci must be in (0, 1), got {ci!r}")
    ok = np.isfinite(xv) & np.isfinite(yv) & (xv > 0) & (yv > 0)
    lx, ly = np.log(xv[ok]), np.log(yv[ok])
    if lx.size < 3 or np.unique(lx).size < 2:
        raise InputError(f"a power-law fit needs >= 3 positive points at >= 2 distinct x; got {lx.size} "
                         f"points at {np.unique(lx).size} x values")
    res = _stats.linregress(lx, ly)
    t = _stats.t.ppf((1 + ci) / 2, lx.size - 2)
    return pd.Series({"exponent": res.slope, "exponent_lo": res.slope - t * res.stderr,
                      "exponent_hi": res.slope + t * res.stderr, "prefactor": float(np.exp(res.intercept)),
                      "r2": res.rvalue ** 2, "n": float(lx.size), "n_x": float(np.unique(lx).size)},
                     name="power_law")


def width_scaling(table: pd.DataFrame, *, ci: float = 0.95, min_widths: int = 3) -> pd.DataFrame:
    """Power-law exponent of deviation against width at each loss level of a ``matched_loss_table``.

    One row per level reached at >= ``min_widths`` widths: level, exponent, exponent_lo, exponent_hi,
    prefactor, r2, n, n_x, ntk_in_ci (whether NTK_EXPONENT = -0.5 lies inside the CI).

    >>> t = pd.DataFrame({"level": 0.1, "width": [10, 10, 100, 100, 1000, 1000],
    ...                   "deviation": [0.31, 0.33, 0.1, 0.099, 0.032, 0.031]})
    >>> fit = width_scaling(t).iloc[0]
    >>> round(float(fit.exponent), 2), bool(fit.ntk_in_ci)
    (-0.5, True)
    """
    need = {"width", "level", "deviation"}
    if not isinstance(table, pd.DataFrame) or not need <= set(table.columns):
        raise InputError(f"width_scaling takes a matched_loss_table with columns {sorted(need)}")
    rows = []
    for level, grp in table.groupby("level", sort=True):
        g = grp[np.isfinite(grp["deviation"]) & (grp["deviation"] > 0)]
        if g["width"].nunique() < min_widths or len(g) < 3:
            continue
        fit = power_law_fit(g["width"], g["deviation"], ci=ci)
        rows.append({"level": level, **fit.to_dict(),
                     "ntk_in_ci": bool(fit.exponent_lo <= NTK_EXPONENT <= fit.exponent_hi)})
    return pd.DataFrame(rows, columns=["level", "exponent", "exponent_lo", "exponent_hi", "prefactor", "r2",
                                       "n", "n_x", "ntk_in_ci"])


def conditional_by_width(runs, layer: str = "fc2", *, bins: int = 24, n_boot: int = 400,
                         seeds_for_ci: int = 5) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per width, seeds pooled: conditional_stats of d in units of the Glorot bound a, and the linear law.

    Returns (stats, laws): stats has the conditional_stats columns plus `width` (w_i and d divided by
    a = sqrt(6 / (fan_in + fan_out)), bins over [-1, 1]); laws has one row per width with `a`,
    `CI from` ("seeds" when at least `seeds_for_ci` runs, else "weights"), the linear_law fields, and
    `slope`, `intercept`, `slope_lo`, `slope_hi` (the law in units of a, as plots.conditional_moments
    draws it).

    >>> stats, laws = conditional_by_width(store.list(), "fc2")  # doctest: +SKIP
    """
    by_width: dict[int, list] = {}
    for run in runs:
        by_width.setdefault(run.config.width, []).append(run)
    if not by_width:
        raise InputError("conditional_by_width got no runs")
    frames, laws = [], []
    for width, rs in sorted(by_width.items()):
        inits = [r.weights("init") for r in rs]
        key = _layer_key(inits[0], layer)
        wi = [w[key] for w in inits]
        wf = [r.weights("final")[key] for r in rs]
        a = float(np.sqrt(6 / sum(wi[0].shape)))
        st = conditional_stats([x / a for x in wi], [y / a for y in wf], bins=bins, range=(-1, 1))
        frames.append(st.assign(width=width))
        by = "seeds" if len(rs) >= seeds_for_ci else "weights"
        law = linear_law(wi, wf, by=by, bins=bins, n_boot=n_boot)
        laws.append({"width": width, "a": a, "CI from": by, **law.to_dict()})
    laws = pd.DataFrame(laws)
    laws = laws.assign(slope=laws["alpha"], intercept=laws["beta"] / laws["a"],
                       slope_lo=laws["alpha_lo"], slope_hi=laws["alpha_hi"])
    return pd.concat(frames, ignore_index=True), laws

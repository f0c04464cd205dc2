"""Training regimes from loss curves: loss minima, divergence, regime label, phase diagram over widths.

Regimes (paper, Fig. 2): *low trainability* (the train loss never falls far below its initial value),
*untrainability* (the run diverges: its train loss jumps far above its running minimum and stays
there), *high trainability* (neither). Non-finite losses count as +inf, hence as divergence.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from .deviation import InputError, _column

LOW, UNTRAINABLE, HIGH = "low trainability", "untrainability", "high trainability"
REGIMES = (LOW, UNTRAINABLE, HIGH)


@dataclass(frozen=True)
class RegimeThresholds:
    """Thresholds of the regime rules (reference loss = the epoch-0 train loss, ~ln(n_classes)).

    div_factor: a diverged loss is >= this many times its running minimum before the jump; 10 is far
        above the brief spikes of stable runs in the paper (Fig. 1a) and far below the 16.1 plateau.
    div_floor_frac: ... and also >= this fraction of the reference loss, so a run at loss 1e-4 that
        drifts to 1e-3 is not called diverged; 0.25 still catches a run stuck near ln(n_classes).
    blowup_factor: a loss that stays >= this multiple of the reference loss has diverged even if it
        never fell first (a blow-up: the clipped loss plateaus at -ln(1e-7) = 16.1, 7x ln(10)).
    min_stay: a finite diverged loss must stay up for at least this many epochs (to the end).
    low_frac: low trainability when the minimum train loss stays above this fraction of the
        reference: the run never gained a factor 10 on its initial loss.
    plateau_frac: the plateau is reached at the first epoch from which the loss stays >= this fraction
        of its final level (median of the last plateau_window epochs).
    """

    div_factor: float = 10.0
    div_floor_frac: float = 0.25
    blowup_factor: float = 2.0
    min_stay: int = 3
    low_frac: float = 0.1
    plateau_frac: float = 0.9
    plateau_window: int = 5

    def __post_init__(self):
        bad = []
        if not self.div_factor > 1:
            bad.append(f"div_factor must be > 1, got {self.div_factor!r}")
        if not self.blowup_factor > 1:
            bad.append(f"blowup_factor must be > 1, got {self.blowup_factor!r}")
        if not self.div_floor_frac >= 0:
            bad.append(f"div_floor_frac must be >= 0, got {self.div_floor_frac!r}")
        if not (isinstance(self.min_stay, int) and self.min_stay >= 1):
            bad.append(f"min_stay must be an integer >= 1, got {self.min_stay!r}")
        if not 0 < self.low_frac < 1:
            bad.append(f"low_frac must be in (0, 1), got {self.low_frac!r}")
        if not 0 < self.plateau_frac <= 1:
            bad.append(f"plateau_frac must be in (0, 1], got {self.plateau_frac!r}")
        if not (isinstance(self.plateau_window, int) and self.plateau_window >= 1):
            bad.append(f"plateau_window must be an integer >= 1, got {self.plateau_window!r}")
        if bad:
            raise InputError("bad regime thresholds: " + "; ".join(bad))


def _nanarg(values: np.ndarray, epochs: np.ndarray) -> tuple[float, float]:
    """(minimum, epoch of the minimum) over the finite values; NaNs when there are none."""
    ok = np.isfinite(values)
    if not ok.any():
        return np.nan, np.nan
    i = int(np.argmin(np.where(ok, values, np.inf)))
    return float(values[i]), float(epochs[i])


def divergence(epochs, train_loss, *, reference: float | None = None,
               thresholds: RegimeThresholds = RegimeThresholds()) -> tuple[int | None, int | None]:
    """(divergence epoch, plateau epoch) of a train-loss curve, or (None, None) if it did not diverge.

    The loss has diverged when, from some epoch to the end, it stays >= max(div_factor * running
    minimum before it, div_floor_frac * reference), or >= blowup_factor * reference (NaN/inf count as
    +inf); the divergence epoch is where that final rise began: the first epoch from which it stays
    that far up.

    >>> divergence(range(8), [2.3, 0.5, 0.1, 0.05, 3.0, 15.0, 16.1, 16.1], reference=2.3)
    (4, 5)
    """
    ep = np.asarray(epochs, dtype=np.float64).ravel()
    loss = np.asarray(train_loss, dtype=np.float64).ravel()
    if ep.shape != loss.shape or ep.size == 0:
        raise InputError(f"epochs and train_loss must be non-empty and equal in length ({ep.size} vs {loss.size})")
    t = thresholds
    lv = np.where(np.isfinite(loss), loss, np.inf)
    prev_min = np.concatenate(([np.inf], np.minimum.accumulate(lv)[:-1]))
    has_ref = reference is not None and np.isfinite(reference)
    floor = t.div_floor_frac * reference if has_ref else 0.0
    with np.errstate(invalid="ignore"):
        blowup = lv >= t.blowup_factor * reference if has_ref else ~np.isfinite(lv)
        far = (lv >= t.div_factor * prev_min) | blowup
        above = far & ((lv >= floor) | blowup)
    stays = np.logical_and.accumulate(above[::-1])[::-1]
    if not stays.any():
        return None, None
    i = int(np.argmax(stays))
    if lv.size - i < t.min_stay and np.isfinite(lv[-1]):
        return None, None
    # the jump starts where the loss first left div_factor x its running minimum for good
    below = np.flatnonzero(~far[:i])
    i = int(below[-1]) + 1 if below.size else 0
    tail = lv[-t.plateau_window:]
    level = np.inf if not np.isfinite(tail).all() else float(np.median(tail))
    at_plateau = lv[i:] >= (t.plateau_frac * level if np.isfinite(level) else np.inf)
    settled = np.logical_and.accumulate(at_plateau[::-1])[::-1]
    j = i + int(np.argmax(settled)) if settled.any() else lv.size - 1
    return int(ep[i]), int(ep[j])


def loss_summary(metrics: pd.DataFrame, *, n_classes: int | None = None,
                 thresholds: RegimeThresholds = RegimeThresholds()) -> dict:
    """Loss landmarks and regime of one run from its metrics (columns epoch, train_loss, test_loss).

    Returns dict: initial_train_loss, reference_loss, min_train_loss, min_train_epoch, min_test_loss,
    min_test_epoch, final_train_loss, final_test_loss, n_nonfinite_loss, diverged, divergence_epoch,
    plateau_epoch, regime. The reference loss is the epoch-0 train loss, or ln(n_classes) when that is
    not finite. Epoch fields are NaN when undefined.

    >>> m = pd.DataFrame({"epoch": range(6), "train_loss": [2.3, 1.0, 0.2, 0.05, 0.04, 0.03],
    ...                   "test_loss": [2.3, 1.1, 0.4, 0.3, 0.35, 0.4]})
    >>> s = loss_summary(m)
    >>> s["regime"], s["min_test_epoch"], s["diverged"]
    ('high trainability', 3.0, False)
    """
    ep = _column(metrics, "epoch")
    tr, te = _column(metrics, "train_loss"), _column(metrics, "test_loss")
    if ep.size == 0:
        raise InputError("metrics has no rows")
    ref = tr[0] if np.isfinite(tr[0]) else (np.log(n_classes) if n_classes else np.nan)
    min_tr, min_tr_ep = _nanarg(tr, ep)
    min_te, min_te_ep = _nanarg(te, ep)
    div_ep, plat_ep = divergence(ep, tr, reference=ref, thresholds=thresholds)
    learned = not np.isfinite(ref) or min_tr <= thresholds.low_frac * ref
    if not learned:
        regime = LOW  # includes runs that blew up to the plateau before learning anything
    elif div_ep is not None:
        regime = UNTRAINABLE  # learned, then diverged
    else:
        regime = HIGH
    return {"initial_train_loss": float(tr[0]), "reference_loss": float(ref),
            "min_train_loss": min_tr, "min_train_epoch": min_tr_ep,
            "min_test_loss": min_te, "min_test_epoch": min_te_ep,
            "final_train_loss": float(tr[-1]), "final_test_loss": float(te[-1]),
            "n_nonfinite_loss": int(np.count_nonzero(~np.isfinite(tr))),
            "diverged": div_ep is not None,
            "divergence_epoch": np.nan if div_ep is None else float(div_ep),
            "plateau_epoch": np.nan if plat_ep is None else float(plat_ep),
            "regime": regime}


def regime_table(runs, *, thresholds: RegimeThresholds = RegimeThresholds()) -> pd.DataFrame:
    """``loss_summary`` of many runs (Run API), one row each, with dataset, mask, width, seed, epochs.

    >>> phase_table(regime_table(store.list()))  # doctest: +SKIP
    """
    rows = []
    for run in runs:
        c = run.config
        rows.append({"dataset": c.dataset, "mask": c.mask, "width": c.width, "seed": c.seed,
                     "epochs": c.epochs, **loss_summary(run.metrics, thresholds=thresholds)})
    if not rows:
        raise InputError("regime_table got no runs")
    return pd.DataFrame(rows)


_GROUP = ["dataset", "mask", "width"]


def _groups(table: pd.DataFrame) -> list[str]:
    need = {"width", "regime", "diverged", "min_train_epoch", "min_test_epoch", "divergence_epoch"}
    if not isinstance(table, pd.DataFrame) or not need <= set(table.columns):
        raise InputError(f"expected a regime_table with columns {sorted(need)}")
    if table.empty:
        raise InputError("the regime table is empty")
    return [c for c in _GROUP if c in table.columns]


def phase_table(table: pd.DataFrame) -> pd.DataFrame:
    """Phase diagram over widths from a ``regime_table``: one row per (dataset, mask, width).

    Columns: n_runs, frac_diverged, {min_train,min_test,divergence,plateau}_epoch_{mean,std}
    (divergence/plateau over diverged runs only), n_low, n_untrainable, n_high and regime (the most
    common label; ties go to the label listed first in REGIMES).

    >>> t = pd.DataFrame({"width": [10, 10, 50], "regime": [LOW, LOW, HIGH], "diverged": [False] * 3,
    ...                   "min_train_epoch": [9.0, 7.0, 5.0], "min_test_epoch": [9.0, 9.0, 2.0],
    ...                   "divergence_epoch": [np.nan] * 3, "plateau_epoch": [np.nan] * 3})
    >>> phase_table(t)[["width", "n_runs", "min_train_epoch_mean", "regime"]].values.tolist()
    [[10, 2, 8.0, 'low trainability'], [50, 1, 5.0, 'high trainability']]
    """
    keys = _groups(table)
    t = table.copy()
    if "plateau_epoch" not in t.columns:
        t["plateau_epoch"] = np.nan
    t["diverged"] = t["diverged"].astype(float)
    g = t.groupby(keys, sort=True)
    out = g.size().rename("n_runs").to_frame()
    out["frac_diverged"] = g["diverged"].mean()
    for col in ("min_train_epoch", "min_test_epoch", "divergence_epoch", "plateau_epoch"):
        out[f"{col}_mean"] = g[col].mean()
        out[f"{col}_std"] = g[col].std(ddof=1)
    for name, label in (("n_low", LOW), ("n_untrainable", UNTRAINABLE), ("n_high", HIGH)):
        out[name] = g["regime"].apply(lambda r, lab=label: int((r == lab).sum()))
    counts = out[["n_low", "n_untrainable", "n_high"]].to_numpy()
    out["regime"] = np.array(REGIMES)[np.argmax(counts, axis=1)]
    return out.reset_index()


def min_loss_vs_width(table: pd.DataFrame) -> pd.DataFrame:
    """Mean and std over seeds of the minimum train and test loss, one row per (dataset, mask, width).

    >>> t = pd.DataFrame({"width": [10, 10], "min_train_loss": [1.0, 3.0], "min_test_loss": [2.0, 2.0]})
    >>> min_loss_vs_width(t).values.tolist()
    [[10.0, 2.0, 2.0, 1.4142135623730951, 2.0, 0.0]]
    """
    need = {"width", "min_train_loss", "min_test_loss"}
    if not isinstance(table, pd.DataFrame) or not need <= set(table.columns) or table.empty:
        raise InputError(f"expected a non-empty regime_table with columns {sorted(need)}")
    keys = [c for c in _GROUP if c in table.columns]
    g = table.groupby(keys, sort=True)
    out = g.size().rename("n_runs").to_frame()
    for col in ("min_train_loss", "min_test_loss"):
        out[f"{col}_mean"] = g[col].mean()
        out[f"{col}_std"] = g[col].std(ddof=1)
    return out.reset_index()


def thresholds_dict(thresholds: RegimeThresholds = RegimeThresholds()) -> dict:
    """The regime thresholds as a plain dict (for tables and captions).

    >>> thresholds_dict()["div_factor"]
    10.0
    """
    return asdict(thresholds)

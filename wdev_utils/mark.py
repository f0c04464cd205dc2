"""The letter mark: how visible the initial glyph is in a weight matrix.

Runs with a mask start with the weights outside the glyph at exactly zero, so the glyph can be read
back from the initial weights (``mask_from_init``). The mark is measured on |W| by the standardised
difference of means inside against outside the glyph (Cohen's d with a pooled standard deviation) and
by the Pearson correlation of |W| with the 0/1 mask.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from .deviation import InputError, _layer_key


def mask_from_init(w_init) -> np.ndarray:
    """Boolean glyph mask of a masked initial weight matrix: True where w_init != 0.

    >>> mask_from_init(np.array([[0.3, 0.0], [0.0, -0.2]])).tolist()
    [[True, False], [False, True]]
    """
    w = np.asarray(w_init, dtype=np.float64)
    mask = w != 0
    if mask.all() or not mask.any():
        raise InputError("w_init has no zero/non-zero split, so it carries no mask; pass the mask "
                         "explicitly or use a run trained with mask != 'none'")
    return mask


def mark_measures(w, mask) -> dict:
    """Contrast and correlation of |w| with the glyph mask.

    Returns dict: contrast ((mean_in - mean_out) / pooled std of |w|), corr (Pearson of |w| with the
    mask), mean_in, mean_out, n_in, n_out, n_nonfinite. Non-finite weights are left out; NaN when a
    side is empty or the pooled std is zero.

    >>> m = mark_measures(np.array([2.0, 4.0, 0.0, 2.0]), np.array([True, True, False, False]))
    >>> round(m["contrast"], 3), round(m["corr"], 3)
    (1.414, 0.707)
    """
    a = np.abs(np.asarray(w, dtype=np.float64))
    mk = np.asarray(mask)
    if a.shape != mk.shape:
        raise InputError(f"weights {a.shape} and mask {mk.shape} differ in shape")
    if a.size == 0:
        raise InputError("weights are empty")
    mk = mk.astype(bool)
    ok = np.isfinite(a)
    a, mk = a[ok], mk[ok]
    inside, outside = a[mk], a[~mk]
    n_in, n_out = inside.size, outside.size
    out = {"contrast": np.nan, "corr": np.nan, "mean_in": np.nan, "mean_out": np.nan,
           "n_in": n_in, "n_out": n_out, "n_nonfinite": int(ok.size - np.count_nonzero(ok))}
    if n_in < 2 or n_out < 2:
        return out
    mi, mo = inside.mean(), outside.mean()
    pooled = np.sqrt(((n_in - 1) * inside.var(ddof=1) + (n_out - 1) * outside.var(ddof=1)) / (n_in + n_out - 2))
    out.update(mean_in=float(mi), mean_out=float(mo))
    if pooled > 0:
        out["contrast"] = float((mi - mo) / pooled)
    if np.ptp(a) > 0:
        out["corr"] = float(np.corrcoef(a, mk.astype(np.float64))[0, 1])
    return out


def mark_evolution(run, layer: str = "fc2", mask=None) -> pd.DataFrame:
    """``mark_measures`` of one layer at each of a run's snapshot epochs (Run API): one row per epoch.

    The mask defaults to ``mask_from_init`` of the run's initial weights.

    >>> mark_evolution(store.run(cfg.replace(mask="a")))[["epoch", "contrast", "corr"]]  # doctest: +SKIP
    """
    init = run.weights("init")
    key = _layer_key(init, layer)
    mk = mask_from_init(init[key]) if mask is None else np.asarray(mask, dtype=bool)
    rows = [{"epoch": int(e), **mark_measures(run.weights(int(e))[key], mk)} for e in run.snapshot_epochs]
    return pd.DataFrame(rows)

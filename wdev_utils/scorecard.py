"""The scorecard: claims C1-C6 of the paper measured on a set of runs, each held or not by a threshold.

Every threshold is a field of ``Thresholds`` (the defaults are ``THRESHOLDS``); the verdicts are
computed, never written by hand. Runs follow the Run API: ``.config`` (dataset, width, seed, mask,
epochs), ``.metrics`` (metrics.csv as a DataFrame), ``.weights(which)``, ``.snapshot_epochs``.
Runs of one data set at a time; unmasked runs (mask == "none") serve C1-C5, masked runs C5-C6.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd
from scipy import stats as _stats

from .deviation import (InputError, _layer_key, conditional_stats, global_measures, jump_lag, linear_law,
                        matched_loss_table, peak_offset, width_scaling, NTK_EXPONENT)
from .mark import mark_measures, mask_from_init
from .regimes import HIGH, REGIMES, UNTRAINABLE, RegimeThresholds, phase_table, regime_table

CLAIMS = {
    "C1": "Successful training leaves the weights close to their initial values: P(w_f | w_i) peaks at "
          "w_f = w_i and the deviation is small next to the spread of the initial weights.",
    "C2": "Weights with larger |w_i| receive larger updates, in the direction of their sign.",
    "C3": "To reach a given loss, wider networks deviate less from their initial weights.",
    "C4": "Three regimes by width: low trainability, untrainability, high trainability.",
    "C5": "The deviation jumps abruptly when the train loss jumps (inside the overfitting region); "
          "the initial mark is erased then.",
    "C6": "The trace of the initial configuration (the letter mark) survives training in stable networks.",
}
COLUMNS = ["claim", "measure", "value", "test", "threshold", "held", "n_runs", "why"]


@dataclass(frozen=True)
class Thresholds:
    """Every number a verdict depends on.

    layer: the weight matrix measured (fc2 = hidden1 -> hidden2, the matrix of the paper's Figs. 1, 3).
    min_frac_runs: a per-run criterion must hold in at least this fraction of the runs it applies to.
    bins, min_bin_count: w_init bins for the conditional statistics; bins with fewer weights are not used.
    c1_peak_iqr: C1, the mode of d per w_init bin is within this many IQRs of d from 0 (count-weighted
        mean over bins): the peak sits at w_f = w_i on the scale of the spread of d.
    c1_rel_dist: C1, ||W_f - W_i||_F / ||W_i||_F at most this: the deviation is small next to the
        spread of the initial weights (0.5: the initial configuration still dominates).
    c2_n_boot, ci: bootstrap replicates and level of the CIs of the linear law (C2).
    c2_rank_corr: C2, Spearman correlation of the per-bin RMS of d with |w_init| at least this.
    c3_levels: C3, train-loss levels as fractions of the epoch-0 train loss; the lowest level reached by
        runs of >= c3_min_widths widths is used. The claim holds when the CI of the exponent of
        rel_dist ~ width**exponent lies below c3_exponent_max (0: wider deviates less).
    c5_lag_epochs, c5_lag_frac: C5, the deviation jump coincides with the loss jump when
        |lag| <= max(c5_lag_epochs, c5_lag_frac * epochs).
    jump_factor, jump_z, jump_skip: an abrupt jump is a one-epoch rise by >= jump_factor with a robust
        z-score >= jump_z among all steps after the first jump_skip epochs.
    mark_visible, mark_erased: contrast (Cohen's d of |W| inside vs outside the glyph) above which the
        mark is visible / below which it is erased; 0.5 and 0.2 are Cohen's 'medium' and 'small'
        effects (a fresh Glorot glyph covering half the matrix has contrast ~2.4).
    regimes: the thresholds of the regime labels (see regimes.RegimeThresholds).
    """

    layer: str = "fc2"
    min_frac_runs: float = 0.75
    bins: int = 20
    min_bin_count: int = 100
    c1_peak_iqr: float = 0.25
    c1_rel_dist: float = 0.5
    c2_n_boot: int = 200
    ci: float = 0.95
    c2_rank_corr: float = 0.5
    c3_levels: tuple = (0.5, 0.2, 0.1, 0.05, 0.02, 0.01, 0.005, 0.002, 0.001)
    c3_min_widths: int = 3
    c3_exponent_max: float = 0.0
    c5_lag_epochs: int = 2
    c5_lag_frac: float = 0.02
    jump_factor: float = 1.5
    jump_z: float = 5.0
    jump_skip: int = 5
    mark_visible: float = 0.5
    mark_erased: float = 0.2
    regimes: RegimeThresholds = field(default_factory=RegimeThresholds)


THRESHOLDS = Thresholds()


def thresholds_table(thresholds: Thresholds = THRESHOLDS) -> pd.DataFrame:
    """The thresholds as a two-column table (name, value), for the book.

    >>> thresholds_table().set_index("name").loc["mark_visible", "value"]
    0.5
    """
    flat = {k: v for k, v in asdict(thresholds).items() if k != "regimes"}
    flat.update({f"regimes.{k}": v for k, v in asdict(thresholds.regimes).items()})
    return pd.DataFrame({"name": list(flat), "value": list(flat.values())})


def _row(claim, measure, value, test, threshold, held, n_runs, why) -> dict:
    return {"claim": claim, "measure": measure, "value": value, "test": test, "threshold": threshold,
            "held": held, "n_runs": n_runs, "why": why}


def _frac_row(claim, measure, ok, th: Thresholds, detail: str, none_why: str) -> dict:
    """A row whose value is the fraction of runs meeting a per-run criterion."""
    ok = np.asarray(ok, dtype=bool)
    if ok.size == 0:
        return _row(claim, measure, np.nan, "value >= threshold", th.min_frac_runs, None, 0, none_why)
    frac = float(ok.mean())
    held = frac >= th.min_frac_runs
    why = f"{int(ok.sum())} of {ok.size} runs meet it ({frac:.0%}, need {th.min_frac_runs:.0%}); {detail}"
    return _row(claim, measure, frac, "value >= threshold", th.min_frac_runs, held, int(ok.size), why)


def _widths(runs) -> str:
    return ", ".join(str(w) for w in sorted({r.config.width for r in runs}))


def _summ(values) -> str:
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return "n/a"
    return f"median {np.median(v):.3g} (range {v.min():.3g} to {v.max():.3g})"


def _pair_layer(run, layer: str):
    init, final = run.weights("init"), run.weights("final")
    key = _layer_key(init, layer)
    return init[key], final[key]


def _c1_c2(stable, th: Thresholds) -> list[dict]:
    none_why = "no unmasked run reached the high-trainability regime"
    peak, rel, alpha_ok, alpha, skew_ok, skew, rank_ok, rank = ([] for _ in range(8))
    for i, run in enumerate(stable):
        wi, wf = _pair_layer(run, th.layer)
        cs = conditional_stats(wi, wf, bins=th.bins)
        use = cs["count"] >= th.min_bin_count
        c = cs[use if use.any() else cs["count"] > 0]
        peak.append(peak_offset(cs, th.min_bin_count))
        rel.append(float(global_measures({"w": wi}, {"w": wf})["rel_dist"].iloc[0]))
        law = linear_law(wi, wf, bins=th.bins, min_count=th.min_bin_count, n_boot=th.c2_n_boot, ci=th.ci, seed=i)
        alpha.append(law.alpha)
        alpha_ok.append(law.alpha_lo > 0)
        skew.append(law.skew_slope)
        skew_ok.append(law.skew_slope_lo > 0)
        rms = np.sqrt(c["mean"] ** 2 + c["std"] ** 2)
        rho = _stats.spearmanr(c["bin_center"].abs(), rms).statistic if len(c) >= 3 else np.nan
        rank.append(rho)
        rank_ok.append(bool(rho >= th.c2_rank_corr))
    w = f"widths {_widths(stable)}" if stable else ""
    return [
        _frac_row("C1", f"per run: count-weighted mean over w_init bins of |peak of d| / IQR(d) <= {th.c1_peak_iqr}",
                  [p <= th.c1_peak_iqr for p in peak], th, f"|peak|/IQR {_summ(peak)}; {w}", none_why),
        _frac_row("C1", f"per run: ||W_f - W_i|| / ||W_i|| <= {th.c1_rel_dist}",
                  [r <= th.c1_rel_dist for r in rel], th, f"relative distance {_summ(rel)}; {w}", none_why),
        _frac_row("C2", f"per run: {th.ci:.0%} CI of alpha in E[d | w_i] = alpha w_i + beta lies above 0",
                  alpha_ok, th, f"alpha {_summ(alpha)}; {w}", none_why),
        _frac_row("C2", f"per run: {th.ci:.0%} CI of the slope of skew(d | w_i) against w_i / std(w_i) lies above 0",
                  skew_ok, th, f"skew slope {_summ(skew)}; {w}", none_why),
        _frac_row("C2", f"per run: Spearman correlation of RMS(d | w_i) with |w_i| over bins >= {th.c2_rank_corr}",
                  rank_ok, th, f"rank correlation {_summ(rank)}; {w}", none_why),
    ]


def _c3(unmasked, table: pd.DataFrame, th: Thresholds) -> dict:
    measure = (f"exponent of {th.layer} rel_dist ~ width**exponent at matched train loss: upper "
               f"{th.ci:.0%} CI bound")
    test = "value < threshold"
    ref = float(np.nanmedian(table["reference_loss"])) if len(table) else np.nan
    if not unmasked or not np.isfinite(ref):
        return _row("C3", measure, np.nan, test, th.c3_exponent_max, None, 0,
                    "no unmasked runs with a finite initial loss")
    levels = np.asarray(th.c3_levels, dtype=np.float64) * ref
    mt = matched_loss_table(unmasked, levels, deviation=f"{th.layer}_rel_dist")
    ws = width_scaling(mt, ci=th.ci, min_widths=th.c3_min_widths)
    if ws.empty:
        return _row("C3", measure, np.nan, test, th.c3_exponent_max, None, len(unmasked),
                    f"no train-loss level in {np.round(levels, 4).tolist()} is reached by runs of "
                    f">= {th.c3_min_widths} widths (widths {_widths(unmasked)})")
    best = ws.sort_values("level").iloc[0]
    at = mt[np.isclose(mt["level"], best.level) & np.isfinite(mt["deviation"])]
    held = bool(best.exponent_hi < th.c3_exponent_max)
    ntk = "inside" if best.ntk_in_ci else "outside"
    why = (f"at train loss {best.level:.3g}: exponent {best.exponent:.3f} [{best.exponent_lo:.3f}, "
           f"{best.exponent_hi:.3f}] from {int(best.n)} runs at widths "
           f"{', '.join(str(w) for w in sorted(at['width'].unique()))}; the lazy-training/NTK "
           f"{NTK_EXPONENT} is {ntk} the CI")
    return _row("C3", measure, float(best.exponent_hi), test, th.c3_exponent_max, held, int(best.n), why)


def _c4(table: pd.DataFrame) -> dict:
    measure = ("regimes (majority over seeds) by increasing width: all three present, in the order "
               "low -> untrainable -> high")
    test = "value >= threshold and ordered"
    if table.empty or table["width"].nunique() < 3:
        return _row("C4", measure, np.nan, test, 3, None, len(table),
                    f"needs >= 3 widths, got {table['width'].nunique() if len(table) else 0}")
    ph = phase_table(table).sort_values("width")
    rank = ph["regime"].map({r: i for i, r in enumerate(REGIMES)}).to_numpy()
    present = len(set(ph["regime"]))
    ordered = bool(np.all(np.diff(rank) >= 0))
    seq = "; ".join(f"{w}: {r}" for w, r in zip(ph["width"], ph["regime"]))
    return _row("C4", measure, float(present), test, 3, bool(present == 3 and ordered), len(table),
                f"{present} regime(s), {'in' if ordered else 'not in'} width order: {seq}")


def _c5(runs, table: pd.DataFrame, th: Thresholds) -> list[dict]:
    # The claim is about the untrainable regime: networks that learned, then diverged. A run that blows up
    # before learning anything (diverged, low trainability) has no overfitting region to diverge in.
    div = [(r, row) for r, (_, row) in zip(runs, table.iterrows())
           if row["diverged"] and row["regime"] == UNTRAINABLE]
    n_blown = int((table["diverged"] & (table["regime"] != UNTRAINABLE)).sum())
    none_why = "no run learned and then diverged (untrainable regime)" + (
        f"; {n_blown} run(s) blew up without learning, which does not test C5" if n_blown else "")
    ok, lags, factors, overfit = [], [], [], []
    for run, row in div:
        jl = jump_lag(run.metrics, deviation=f"{th.layer}_rel_dist", skip=th.jump_skip,
                      loss_window=(row["divergence_epoch"], row["plateau_epoch"]),
                      min_factor=th.jump_factor, min_z=th.jump_z)
        tol = max(th.c5_lag_epochs, th.c5_lag_frac * run.config.epochs)
        lag = jl["lag"]
        lags.append(np.nan if lag is None else lag)
        factors.append(jl["dev_factor"])
        ok.append(bool(jl["dev_found"] and lag is not None and abs(lag) <= tol))
        overfit.append(bool(row["divergence_epoch"] > row["min_test_epoch"]))
    who = "per run that learned, then diverged"
    rows = [
        _frac_row("C5", f"{who}: abrupt jump of {th.layer} rel_dist (factor >= {th.jump_factor}, robust z >= "
                  f"{th.jump_z}) within max({th.c5_lag_epochs}, {th.c5_lag_frac:g} x epochs) epochs of the "
                  "train-loss jump", ok, th,
                  f"lag (deviation - loss, epochs) {_summ(lags)}; jump factor {_summ(factors)}", none_why),
        _frac_row("C5", f"{who}: divergence after the epoch of minimum test loss (overfitting region)",
                  overfit, th, f"divergence epochs {_summ([r['divergence_epoch'] for _, r in div])}", none_why),
    ]
    erased, contrast = [], []
    for run, row in div:
        if run.config.mask == "none":
            continue
        wi, wf = _pair_layer(run, th.layer)
        c = mark_measures(wf, mask_from_init(wi))["contrast"]
        contrast.append(c)
        erased.append(bool(not c >= th.mark_erased))  # no finite weights left: nothing to see
    rows.append(_frac_row("C5", f"{who}, masked: final mark contrast < {th.mark_erased} (erased)",
                          erased, th, f"final contrast {_summ(contrast)}",
                          "no masked run learned and then diverged"))
    return rows


def _c6(masked_stable, th: Thresholds) -> dict:
    visible, contrast = [], []
    for run in masked_stable:
        wi, wf = _pair_layer(run, th.layer)
        c = mark_measures(wf, mask_from_init(wi))["contrast"]
        contrast.append(c)
        visible.append(bool(c >= th.mark_visible))
    return _frac_row("C6", f"per stable masked run (high trainability): final mark contrast >= {th.mark_visible}",
                     visible, th, f"final contrast {_summ(contrast)}",
                     "no masked run reached the high-trainability regime without diverging")


def scorecard(runs, thresholds: Thresholds = THRESHOLDS) -> pd.DataFrame:
    """Evaluate claims C1-C6 on runs of one data set: one row per measure, columns COLUMNS.

    ``held`` is True/False, or None when the runs cannot test the measure (``why`` says why).
    Incomplete runs (``is_done`` False) are left out and counted in ``df.attrs["n_skipped"]``.

    >>> card = scorecard(get_runs(configs))  # doctest: +SKIP
    >>> verdicts(card)  # doctest: +SKIP
    """
    th = thresholds
    runs = list(runs)
    done = [r for r in runs if getattr(r, "is_done", True)]
    if not done:
        raise InputError("scorecard got no finished runs")
    datasets = sorted({r.config.dataset for r in done})
    if len(datasets) > 1:
        raise InputError(f"scorecard evaluates one data set at a time, got {datasets}; call it per data set")
    table = regime_table(done, thresholds=th.regimes)
    unmasked_idx = [i for i, r in enumerate(done) if r.config.mask == "none"]
    unmasked = [done[i] for i in unmasked_idx]
    t_un = table.iloc[unmasked_idx].reset_index(drop=True)
    stable = [r for r, reg in zip(unmasked, t_un["regime"]) if reg == HIGH]
    masked_stable = [r for r, (_, row) in zip(done, table.iterrows()) if r.config.mask != "none"
                     and row["regime"] == HIGH]
    rows = _c1_c2(stable, th) + [_c3(unmasked, t_un, th), _c4(t_un)] + _c5(done, table, th) + [_c6(masked_stable, th)]
    card = pd.DataFrame(rows, columns=COLUMNS)
    card["held"] = pd.Series([_held(h) for h in card["held"]], dtype=object)
    card.attrs.update(n_runs=len(done), n_skipped=len(runs) - len(done), dataset=datasets[0])
    return card


def _held(v):
    """True/False/None from a table cell (pandas may hold None as NaN)."""
    return None if v is None or (isinstance(v, float) and np.isnan(v)) else bool(v)


def verdicts(card: pd.DataFrame) -> pd.DataFrame:
    """One row per claim: statement and held (False if any measure failed, else None if any was not
    testable, else True).

    >>> card = pd.DataFrame({"claim": ["C1", "C1", "C2"], "held": [True, None, True]})
    >>> verdicts(card)[["claim", "held"]].values.tolist()
    [['C1', None], ['C2', True]]
    """
    if not isinstance(card, pd.DataFrame) or not {"claim", "held"} <= set(card.columns):
        raise InputError("verdicts takes the table returned by scorecard()")
    rows = []
    for claim, grp in card.groupby("claim", sort=True):
        h = [_held(v) for v in grp["held"]]
        held = False if False in h else (None if None in h else True)
        rows.append({"claim": claim, "statement": CLAIMS.get(claim, ""), "held": held, "n_measures": len(h)})
    return pd.DataFrame(rows)

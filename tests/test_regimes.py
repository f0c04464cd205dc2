"""Regime labels, divergence and the phase table on planted loss curves."""
import doctest
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from wdev_utils import regimes as rg
from wdev_utils.deviation import InputError
from wdev_utils.regimes import (HIGH, LOW, UNTRAINABLE, RegimeThresholds, divergence, loss_summary,
                                min_loss_vs_width, phase_table, regime_table)

EPOCHS = np.arange(201)
LN10 = np.log(10)


def _noise(seed, n=EPOCHS.size, sd=0.03):
    return np.exp(np.random.default_rng(seed).normal(0, sd, n))


def curve(kind, seed=0, t_div=120):
    """Planted train/test loss curves of each regime (10 classes, initial loss ln 10)."""
    t = EPOCHS
    if kind == "high":
        train = (LN10 * np.exp(-t / 8) + 0.01) * _noise(seed)
        train[90] *= 30  # a brief spike must not count as divergence
        test = (LN10 * np.exp(-t / 8) + 0.3 + 0.002 * np.maximum(t - 30, 0)) * _noise(seed + 1)
    elif kind == "low":
        train = (LN10 * np.exp(-t / 20) * 0.5 + 0.6) * _noise(seed)
        test = train * 1.1
    elif kind == "clipped":  # keras loss: plateau at -ln(1e-7)
        train = (LN10 * np.exp(-t / 8) + 0.02) * _noise(seed)
        train[t_div:t_div + 30] = np.geomspace(0.5, 16.1, 30)[:EPOCHS.size - t_div]
        train[t_div + 30:] = 16.118
        test = train + 0.4
    elif kind == "nan":  # logits loss blowing up to NaN/inf
        train = (LN10 * np.exp(-t / 8) + 0.02) * _noise(seed)
        train[t_div] = 50.0
        train[t_div + 1:] = np.nan
        train[t_div + 5] = np.inf
        test = train.copy()
    elif kind == "stuck":  # logits loss: dead network stuck near ln(n_classes)
        train = (LN10 * np.exp(-t / 8) + 0.02) * _noise(seed)
        train[t_div:] = LN10 * _noise(seed, EPOCHS.size - t_div, 0.001)
        test = train + 0.1
    else:
        raise ValueError(kind)
    return pd.DataFrame({"epoch": t, "train_loss": train, "test_loss": test})


@pytest.mark.parametrize("kind, regime, div", [
    ("high", HIGH, None), ("low", LOW, None), ("clipped", UNTRAINABLE, 120),
    ("nan", UNTRAINABLE, 120), ("stuck", UNTRAINABLE, 120)])
def test_planted_curves_get_right_label(kind, regime, div):
    for seed in range(3):
        s = loss_summary(curve(kind, seed))
        assert s["regime"] == regime
        assert s["diverged"] is (div is not None)
        if div is None:
            assert np.isnan(s["divergence_epoch"])
        else:
            assert s["divergence_epoch"] == div


def test_plateau_epoch_and_nonfinite_count():
    s = loss_summary(curve("clipped", t_div=100))
    assert s["divergence_epoch"] == 100
    # the loss climbs through geomspace(0.5, 16.1, 30) and reaches 0.9 * 16.1 at its last steps
    climb = np.geomspace(0.5, 16.1, 30)
    assert s["plateau_epoch"] == 100 + np.argmax(climb >= 0.9 * 16.118)
    n = loss_summary(curve("nan"))
    assert n["n_nonfinite_loss"] == EPOCHS.size - 121 and n["plateau_epoch"] == 121


def test_minima_match_numpy():
    m = curve("high", 4)
    s = loss_summary(m)
    assert s["min_train_loss"] == m.train_loss.min() and s["min_train_epoch"] == m.train_loss.idxmin()
    assert s["min_test_loss"] == m.test_loss.min() and s["min_test_epoch"] == m.test_loss.idxmin()
    n = loss_summary(curve("nan"))
    finite = curve("nan").train_loss.replace([np.inf], np.nan)
    assert n["min_train_loss"] == finite.min() and n["min_train_epoch"] == finite.idxmin()


def test_thresholds_are_parameters():
    m = curve("high")
    assert loss_summary(m)["regime"] == HIGH  # its 30x spike at epoch 90 does not stay
    m.loc[90:, "train_loss"] *= 100  # a rise kept to the end: a divergence
    assert loss_summary(m)["divergence_epoch"] == 90
    assert loss_summary(m, thresholds=RegimeThresholds(div_factor=1000))["regime"] == HIGH
    low = curve("low")
    assert loss_summary(low)["regime"] == LOW
    assert loss_summary(low, thresholds=RegimeThresholds(low_frac=0.5))["regime"] == HIGH
    late = curve("clipped", t_div=197)  # only the last two epochs above the floor: not (yet) diverged
    assert loss_summary(late)["regime"] == HIGH
    early = loss_summary(late, thresholds=RegimeThresholds(min_stay=2))
    assert early["regime"] == UNTRAINABLE and early["divergence_epoch"] == 197
    with pytest.raises(InputError, match="div_factor must be > 1.*low_frac must be in"):
        RegimeThresholds(div_factor=0.5, low_frac=2.0)


def test_divergence_edge_cases():
    assert divergence([0, 1, 2], [np.nan, np.nan, np.nan]) == (0, 0)
    assert divergence([0, 1, 2, 3], [2.0, 1.0, 0.5, 0.4]) == (None, None)
    # drift from 1e-4 to 2e-3 is 20x the minimum but under the floor: not a divergence
    assert divergence(range(6), [2.3, 1e-3, 1e-4, 2e-3, 2e-3, 2e-3], reference=2.3) == (None, None)
    assert divergence(range(6), [2.3, 1e-3, 1e-4, 2e-3, 2e-3, 2e-3]) == (3, 3)  # no reference: no floor
    with pytest.raises(InputError, match="equal in length"):
        divergence([0, 1], [1.0])


def test_loss_summary_falls_back_to_ln_classes():
    m = curve("low")
    m.loc[0, "train_loss"] = np.nan
    s = loss_summary(m, n_classes=10)
    assert np.isclose(s["reference_loss"], LN10) and s["regime"] == LOW
    with pytest.raises(InputError, match="no column 'test_loss'"):
        loss_summary(m.drop(columns="test_loss"))


def _runs():
    plan = [(10, "low"), (50, "clipped"), (100, "clipped"), (300, "high"), (500, "high")]
    runs = []
    for width, kind in plan:
        for seed in range(3):
            t_div = 100 + 10 * seed + width // 10
            cfg = SimpleNamespace(width=width, seed=seed, dataset="mnist-5k", mask="none", epochs=200)
            runs.append(SimpleNamespace(config=cfg, metrics=curve(kind, seed, t_div)))
    return runs


def test_phase_table_against_groupby():
    table = regime_table(_runs())
    assert len(table) == 15 and set(table["regime"]) == {LOW, UNTRAINABLE, HIGH}
    ph = phase_table(table)
    assert ph["width"].tolist() == [10, 50, 100, 300, 500]
    assert ph["regime"].tolist() == [LOW, UNTRAINABLE, UNTRAINABLE, HIGH, HIGH]
    for _, row in ph.iterrows():
        sub = table[table.width == row.width]
        assert row.n_runs == len(sub) and row.frac_diverged == sub.diverged.mean()
        for col in ("min_train_epoch", "min_test_epoch", "divergence_epoch"):
            vals = sub[col].dropna()
            if len(vals):
                assert np.isclose(row[f"{col}_mean"], vals.mean())
                assert np.isclose(row[f"{col}_std"], vals.std(ddof=1))
            else:
                assert np.isnan(row[f"{col}_mean"])
    div = ph.set_index("width").loc[50]
    assert div["divergence_epoch_mean"] == np.mean([105, 115, 125])
    ml = min_loss_vs_width(table)
    for _, row in ml.iterrows():
        sub = table[table.width == row.width]
        assert np.isclose(row.min_train_loss_mean, sub.min_train_loss.mean())
        assert np.isclose(row.min_test_loss_std, sub.min_test_loss.std(ddof=1))
    with pytest.raises(InputError, match="regime_table"):
        phase_table(pd.DataFrame({"width": [1]}))
    with pytest.raises(InputError, match="no runs"):
        regime_table([])


def test_docstring_examples():
    result = doctest.testmod(rg)
    assert result.attempted >= 5 and result.failed == 0


def test_blowup_without_learning_is_divergence_and_a_stuck_run_is_not():
    blowup = [2.3, 14.5, 16.1, 16.1, 16.1, 16.1]
    assert divergence(range(6), blowup, reference=2.3)[0] == 1
    s = loss_summary(pd.DataFrame({"epoch": range(6), "train_loss": blowup, "test_loss": blowup}))
    assert s["diverged"] and s["divergence_epoch"] == 1
    assert s["regime"] == LOW, "a run that never learned is not the learn-then-diverge regime"
    learned_then = [2.3, 0.5, 0.1, 0.05, 16.1, 16.1, 16.1]
    s = loss_summary(pd.DataFrame({"epoch": range(7), "train_loss": learned_then, "test_loss": learned_then}))
    assert s["diverged"] and s["regime"] == UNTRAINABLE and s["divergence_epoch"] == 4
    stuck = [2.30, 2.31, 2.30, 2.31, 2.30, 2.30]
    assert divergence(range(6), stuck, reference=2.3) == (None, None)

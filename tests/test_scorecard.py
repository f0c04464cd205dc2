"""The scorecard and the letter mark on synthetic runs that follow the Run API."""
import doctest
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
import pytest

from wdev_utils import mark as mk
from wdev_utils import scorecard as sc
from wdev_utils.deviation import InputError
from wdev_utils.mark import mark_evolution, mark_measures, mask_from_init
from wdev_utils.scorecard import THRESHOLDS, scorecard, thresholds_table, verdicts

LN10 = np.log(10)
EPOCHS = 80


@dataclass(frozen=True)
class FakeConfig:
    width: int
    seed: int
    dataset: str = "mnist-5k"
    mask: str = "none"
    epochs: int = EPOCHS


class FakeRun:
    """Run API from synthetic arrays: .config, .metrics, .weights(which), .snapshot_epochs."""

    def __init__(self, config, metrics, snapshots, is_done=True):
        self.config, self.metrics, self._snaps, self.is_done = config, metrics, snapshots, is_done
        self.snapshot_epochs = sorted(snapshots)

    def weights(self, which):
        epoch = {"init": 0, "final": max(self._snaps)}.get(which, which)
        if epoch not in self._snaps:
            raise KeyError(f"no snapshot at epoch {epoch}")
        return self._snaps[epoch]


def glyph(n):
    """A filled triangle covering about half an n x n matrix."""
    i, j = np.indices((n, n))
    return j <= i


def make_run(width, seed, kind, *, mask=False, exponent=-0.5, sign=1.0, t_div=50, core_shift=0.0):
    """kind: 'high' (stable), 'low' (weak learner) or 'div' (learns, then diverges at t_div).
    sign: direction of the tail of d relative to sign(w_i); core_shift: the core of d sits at
    core_shift * w_i instead of 0; exponent: rel_dist ~ width**exponent at any given epoch."""
    rng = np.random.default_rng(1000 * width + seed)
    t = np.arange(EPOCHS + 1)
    noise = np.exp(rng.normal(0, 0.01, t.size))
    if kind == "low":
        train = (0.5 * LN10 * np.exp(-t / 10) + 0.8) * noise
    else:
        train = (LN10 * np.exp(-t / 5) + (0.01 if kind == "high" else 0.02)) * noise
    test = LN10 * np.exp(-t / 5) + 0.3 + 0.003 * np.maximum(t - 20, 0)
    rel = 2.0 * width ** exponent * (1 - np.exp(-t / 5)) * noise
    if kind in ("div", "blow"):
        t_div = 1 if kind == "blow" else t_div  # blow: to the plateau before learning anything
        train[t_div:] = 16.118
        test[t_div:] = 16.5
        rel[t_div:] *= 6.0
    metrics = pd.DataFrame({"epoch": t, "train_loss": train, "test_loss": test, "train_acc": 0.5,
                            "test_acc": 0.5, "fc2_rel_dist": rel})
    a = np.sqrt(6 / (2 * width))
    init = {"fc1.weight": rng.uniform(-a, a, (width, 20)), "fc2.weight": rng.uniform(-a, a, (width, width)),
            "fc2.bias": np.zeros(width)}
    if mask:
        init["fc2.weight"] = np.where(glyph(width), init["fc2.weight"], 0.0)
    wi = init["fc2.weight"]
    # core at d = 0 (the peak), plus a tail in the direction of sign(w_i) that grows with |w_i|
    tail = (rng.random(wi.shape) < 0.3) * rng.exponential(0.3 * a, wi.shape) * np.abs(wi) / a
    d = rng.normal(core_shift * wi, 0.03 * a) + sign * np.sign(wi) * tail
    final = {k: v.copy() for k, v in init.items()}
    final["fc2.weight"] = wi + d
    if kind in ("div", "blow"):
        final["fc2.weight"] = rng.normal(0, 5 * a, wi.shape)  # blown up: no memory of the start
    mid = {k: 0.5 * (init[k] + final[k]) for k in init}
    snaps = {0: init, EPOCHS // 2: mid, EPOCHS: final}
    return FakeRun(FakeConfig(width, seed, mask="a" if mask else "none"), metrics, snaps)


PLAN = [(8, "low"), (16, "div"), (24, "div"), (64, "high"), (96, "high")]


def runs_for(plan=PLAN, seeds=(0, 1), masks=True, **kw):
    runs = [make_run(w, s, kind, **kw) for w, kind in plan for s in seeds]
    if masks:
        runs += [make_run(64, 0, "high", mask=True), make_run(24, 0, "div", mask=True)]
    return runs


@pytest.fixture(scope="module")
def full_card():
    return scorecard(runs_for())


def _held(card, claim):
    return card[card.claim == claim]["held"].tolist()


def test_full_synthetic_set_holds_every_claim(full_card):
    card = full_card
    assert list(card.columns) == sc.COLUMNS
    assert set(card["claim"]) == {"C1", "C2", "C3", "C4", "C5", "C6"}
    assert all(h is True for h in card["held"]), card[["claim", "measure", "value", "held", "why"]].to_string()
    v = verdicts(card)
    assert v["held"].tolist() == [True] * 6 and v["statement"].str.len().min() > 20
    c3 = card[card.claim == "C3"].iloc[0]
    assert c3["value"] < 0 and "-0.5 is inside the CI" in c3["why"]
    c4 = card[card.claim == "C4"].iloc[0]
    assert c4["value"] == 3 and "8: low trainability" in c4["why"]
    assert card.attrs["n_runs"] == 12


def test_values_are_fractions_and_tests_follow_thresholds(full_card):
    frac = full_card[full_card["test"] == "value >= threshold"]
    assert ((frac["value"] >= 0) & (frac["value"] <= 1)).all()
    assert (frac["threshold"] == THRESHOLDS.min_frac_runs).all()
    # C1/C2 apply to the unmasked high-trainability runs only: 2 widths x 2 seeds
    assert (full_card[full_card.claim.isin(["C1", "C2"])]["n_runs"] == 4).all()


def test_not_testable_without_diverged_or_masked_runs():
    plan = [(8, "low"), (32, "high"), (64, "high"), (96, "high")]
    card = scorecard(runs_for(plan, masks=False))
    assert _held(card, "C5") == [None, None, None]
    assert _held(card, "C6") == [None]
    assert "no run learned and then diverged" in card[card.claim == "C5"]["why"].iloc[0]
    assert verdicts(card).set_index("claim").loc["C5", "held"] is None
    # and the regime sequence lacks untrainability
    assert _held(card, "C4") == [False]
    two = scorecard(runs_for([(32, "high"), (64, "high")], masks=False))
    assert _held(two, "C4") == [None] and _held(two, "C3") == [None]


def test_runs_that_blow_up_before_learning_do_not_test_c5():
    # diverged at epoch 1 with a test-loss minimum at epoch 0: no overfitting region, no untrainable regime
    plan = [(8, "low"), (16, "blow"), (24, "blow"), (64, "high"), (96, "high")]
    card = scorecard(runs_for(plan, masks=False) + [make_run(24, 0, "blow", mask=True)])
    assert _held(card, "C5") == [None, None, None]
    why = card[card.claim == "C5"]["why"].iloc[0]
    assert "no run learned and then diverged" in why and "5 run(s) blew up without learning" in why
    assert verdicts(card).set_index("claim").loc["C5", "held"] is None


def test_falsified_claims_are_reported_false():
    # updates against the sign of w_i: C2 fails; deviation growing with width: C3 fails
    card = scorecard(runs_for(masks=False, sign=-1.0, exponent=0.4))
    assert _held(card, "C2")[:2] == [False, False]
    assert _held(card, "C3") == [False]
    assert verdicts(card).set_index("claim").loc["C2", "held"] is False
    # the core of P(d | w_i) moved away from d = 0: the peak is not at w_f = w_i
    moved = scorecard(runs_for(masks=False, core_shift=0.5))
    assert _held(moved, "C1")[0] is False
    # widths in the wrong order: high trainability at the narrowest width
    wrong = scorecard(runs_for([(8, "high"), (16, "div"), (24, "low"), (64, "high")], masks=False))
    assert _held(wrong, "C4") == [False] and "not in width order" in wrong[wrong.claim == "C4"]["why"].iloc[0]


def test_deviation_jump_off_the_loss_jump_fails_c5():
    runs = runs_for(masks=False)
    for r in runs:
        if r.config.width in (16, 24):
            rel = r.metrics["fc2_rel_dist"].to_numpy().copy()
            rel[50:] /= 6.0
            rel[65:] *= 6.0  # the deviation jumps 15 epochs after the loss
            r.metrics["fc2_rel_dist"] = rel
    card = scorecard(runs)
    c5 = card[card.claim == "C5"]
    assert c5["held"].iloc[0] is False and "median 15" in c5["why"].iloc[0]


def test_thresholds_live_in_one_place_and_change_verdicts():
    runs = runs_for()
    strict = replace(THRESHOLDS, c1_rel_dist=1e-3, mark_visible=50.0)
    card = scorecard(runs, strict)
    c1 = card[card.claim == "C1"]
    assert c1["held"].tolist() == [True, False] and _held(card, "C6") == [False]
    tt = thresholds_table()
    assert {"c1_rel_dist", "mark_visible", "regimes.div_factor"} <= set(tt["name"])
    assert tt.set_index("name").loc["regimes.low_frac", "value"] == THRESHOLDS.regimes.low_frac


def test_bad_input_and_incomplete_runs():
    with pytest.raises(InputError, match="no finished runs"):
        scorecard([])
    other = make_run(64, 5, "high")
    other.config = FakeConfig(64, 5, dataset="fashion-mnist")
    with pytest.raises(InputError, match="one data set at a time"):
        scorecard(runs_for(masks=False) + [other])
    half = make_run(96, 7, "high")
    half.is_done = False
    card = scorecard(runs_for(masks=False) + [half])
    assert card.attrs["n_skipped"] == 1 and card.attrs["n_runs"] == 10
    with pytest.raises(InputError, match="table returned by scorecard"):
        verdicts(pd.DataFrame({"x": [1]}))


# --- the letter mark -----------------------------------------------------------------------------

def test_mark_measures_against_direct_formulas():
    rng = np.random.default_rng(3)
    m = glyph(40)
    w = np.where(m, rng.uniform(-1, 1, m.shape), rng.normal(0, 0.1, m.shape))
    r = mark_measures(w, m)
    a = np.abs(w)
    i, o = a[m], a[~m]
    pooled = np.sqrt(((i.size - 1) * i.var(ddof=1) + (o.size - 1) * o.var(ddof=1)) / (a.size - 2))
    assert np.isclose(r["contrast"], (i.mean() - o.mean()) / pooled)
    assert np.isclose(r["corr"], np.corrcoef(a.ravel(), m.ravel())[0, 1])
    assert (r["n_in"], r["n_out"]) == (m.sum(), (~m).sum())
    w[0, 0] = np.nan
    assert mark_measures(w, m)["n_nonfinite"] == 1
    erased = mark_measures(rng.normal(size=m.shape), m)
    assert abs(erased["contrast"]) < 0.2 and abs(erased["corr"]) < 0.1
    with pytest.raises(InputError, match="differ in shape"):
        mark_measures(w, m[:-1])


def test_fresh_glorot_glyph_contrast_and_mask_from_init():
    rng = np.random.default_rng(0)
    m = glyph(200)
    w = np.where(m, rng.uniform(-0.1, 0.1, m.shape), 0.0)
    np.testing.assert_array_equal(mask_from_init(w), m)
    # |U(-a, a)| inside (mean a/2, var a^2/12), zeros outside, about half each
    n_in, n_out = m.sum(), (~m).sum()
    expected = 0.05 / np.sqrt((n_in - 1) * 0.01 / 12 / (m.size - 2))
    assert np.isclose(mark_measures(w, m)["contrast"], expected, rtol=0.03)
    with pytest.raises(InputError, match="carries no mask"):
        mask_from_init(rng.uniform(-1, 1, (5, 5)))


def test_mark_evolution_over_snapshots():
    stable = mark_evolution(make_run(64, 0, "high", mask=True))
    diverged = mark_evolution(make_run(24, 0, "div", mask=True))
    assert stable["epoch"].tolist() == [0, EPOCHS // 2, EPOCHS]
    assert (stable["contrast"] > 1.5).all()
    assert diverged["contrast"].iloc[0] > 1.5 and abs(diverged["contrast"].iloc[-1]) < 0.3


def test_docstring_examples():
    for module in (sc, mk):
        result = doctest.testmod(module)
        assert result.attempted >= 1 and result.failed == 0

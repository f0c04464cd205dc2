"""Deviation math against independent numpy/scipy computations and planted answers."""
import doctest
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from scipy.spatial import distance

from wdev_utils import deviation as dv
from wdev_utils.deviation import (InputError, STAT_COLUMNS, conditional_density, conditional_stats,
                                  deviation_at_loss, deviation_quantiles, detect_jump, global_measures,
                                  joint_histogram, jump_lag, linear_law, matched_loss_table, power_law_fit,
                                  snapshot_quantiles, width_scaling)
from wdev_utils.errors import ConfigError, WdevError


@pytest.fixture
def pair():
    rng = np.random.default_rng(7)
    wi = rng.uniform(-0.3, 0.2, 20_000)
    d = 0.1 * wi + rng.gamma(2.0, 0.01, wi.size) * np.sign(wi) + rng.normal(0, 0.01, wi.size)
    return wi, wi + d


def _binned(wi, d, bins, stat):
    return stats.binned_statistic(wi, d, statistic=stat, bins=bins)


# --- conditional_stats ---------------------------------------------------------------------------

def test_conditional_stats_matches_scipy_binned_statistic(pair):
    wi, wf = pair
    d = wf - wi
    df = conditional_stats(wi, wf, bins=17)
    assert list(df.columns) == list(STAT_COLUMNS)
    ref = _binned(wi, d, 17, "count")
    np.testing.assert_allclose(df["bin_left"], ref.bin_edges[:-1])
    np.testing.assert_allclose(df["bin_right"], ref.bin_edges[1:])
    np.testing.assert_array_equal(df["count"], ref.statistic)
    np.testing.assert_allclose(df["mean"], _binned(wi, d, 17, "mean").statistic, rtol=1e-10)
    np.testing.assert_allclose(df["std"], _binned(wi, d, 17, "std").statistic, rtol=1e-9)
    np.testing.assert_allclose(df["median"], _binned(wi, d, 17, "median").statistic, rtol=1e-12)
    np.testing.assert_allclose(df["skew"], _binned(wi, d, 17, stats.skew).statistic, rtol=1e-8)
    for col, q in (("q02", 2), ("q25", 25), ("q75", 75), ("q98", 98)):
        np.testing.assert_allclose(df[col], _binned(wi, d, 17, lambda v, q=q: np.percentile(v, q)).statistic,
                                   rtol=1e-12, err_msg=col)
    assert df.attrs["n_nonfinite"] == 0 and df.attrs["n_used"] == wi.size


def test_quantile_binning_and_explicit_edges(pair):
    wi, wf = pair
    d = wf - wi
    df = conditional_stats(wi, wf, bins=10, binning="quantile")
    edges = np.quantile(wi, np.linspace(0, 1, 11))
    np.testing.assert_allclose(df["bin_left"], edges[:-1])
    assert df["count"].sum() == wi.size
    assert df["count"].max() - df["count"].min() <= 2
    np.testing.assert_allclose(df["mean"], stats.binned_statistic(wi, d, "mean", bins=edges).statistic, rtol=1e-10)
    edges = np.array([-0.2, -0.05, 0.0, 0.1])
    df = conditional_stats(wi, wf, bins=edges)
    inside = (wi >= -0.2) & (wi <= 0.1)
    assert df["count"].sum() == inside.sum() and df.attrs["n_outside"] == (~inside).sum()
    np.testing.assert_allclose(df["median"], stats.binned_statistic(wi, d, "median", bins=edges).statistic)


def test_range_drops_and_counts_outside(pair):
    wi, wf = pair
    df = conditional_stats(wi, wf, bins=5, range=(-0.1, 0.1))
    inside = (wi >= -0.1) & (wi <= 0.1)
    assert df.attrs["n_outside"] == (~inside).sum()
    np.testing.assert_allclose(df["bin_left"], np.linspace(-0.1, 0.1, 6)[:-1])
    ref = stats.binned_statistic(wi[inside], (wf - wi)[inside], "mean", bins=5, range=(-0.1, 0.1))
    np.testing.assert_allclose(df["mean"], ref.statistic, rtol=1e-10)


def test_pooling_lists_dicts_and_shapes(pair):
    wi, wf = pair
    a, b = wi[:12_000].reshape(30, 40, 10), wi[12_000:].reshape(80, 100)
    fa, fb = wf[:12_000].reshape(30, 40, 10), wf[12_000:].reshape(80, 100)
    flat = conditional_stats(wi, wf, bins=8)
    as_list = conditional_stats([a, b], [fa, fb], bins=8)
    as_dict = conditional_stats({"x": a, "y": b}, {"x": fa, "y": fb}, bins=8)
    seeds = conditional_stats([{"x": a}, {"x": b}], [{"x": fa}, {"x": fb}], bins=8)
    for other in (as_list, as_dict, seeds):
        pd.testing.assert_frame_equal(flat, other, check_exact=False, rtol=1e-12)


def test_nonfinite_left_out_and_counted(pair):
    wi, wf = pair
    wi2, wf2 = wi.copy(), wf.copy()
    wi2[[3, 10]] = np.nan
    wf2[[10, 20, 30]] = [np.inf, -np.inf, np.nan]
    df = conditional_stats(wi2, wf2, bins=9)
    assert df.attrs["n_nonfinite"] == 4  # 3, 10, 20, 30
    keep = np.ones(wi.size, bool)
    keep[[3, 10, 20, 30]] = False
    clean = conditional_stats(wi[keep], wf[keep], bins=9)
    pd.testing.assert_frame_equal(df, clean)


def test_empty_bins_are_nan_and_constant_bin_has_nan_skew():
    wi = np.array([0.0, 0.0, 0.0, 1.0, 1.0])
    df = conditional_stats(wi, wi + np.array([0.5, 0.5, 0.5, 1.0, 2.0]), bins=3)
    assert df["count"].tolist() == [3, 0, 2]
    assert np.isnan(df.loc[1, ["mean", "median", "peak", "skew"]].astype(float)).all()
    assert np.isnan(df.loc[0, "skew"]) and df.loc[0, "peak"] == 0.5 and df.loc[0, "std"] == 0


@pytest.mark.parametrize("kind", ["normal", "gamma", "laplace"])
def test_peak_recovers_known_mode(kind):
    rng = np.random.default_rng(3)
    wi = rng.uniform(-1, 1, 200_000)
    if kind == "normal":
        d, mode, scale = rng.normal(0.3 * wi, 0.5), 0.3 * wi, 0.5
    elif kind == "gamma":  # mode (k - 1) * theta = 1, sd = sqrt(3)
        d, mode, scale = rng.gamma(2.0, 1.0, wi.size) - wi, 1.0 - wi, np.sqrt(2.0)
    else:
        d, mode, scale = rng.laplace(2 * wi, 1.0), 2 * wi, np.sqrt(2.0)
    df = conditional_stats(wi, wi + d, bins=10)
    centre_mode = {"normal": 0.3, "gamma": -1.0, "laplace": 2.0}[kind] * df["bin_center"]
    if kind == "gamma":
        centre_mode = centre_mode + 1.0
    err = np.abs(df["peak"] - centre_mode) / scale
    assert err.max() < 0.15, err.tolist()
    # the mode differs from mean and median for the skewed case
    if kind == "gamma":
        assert (df["mean"] - df["peak"]).min() > 0.5


@pytest.mark.parametrize("kwargs, match", [
    (dict(bins=0), "bins must be an integer >= 1"),
    (dict(bins=-3), "bins must be an integer >= 1"),
    (dict(bins=2.5), "bins must be an integer >= 1 or a 1-D increasing"),
    (dict(bins=[1.0, 0.0]), "increasing"),
    (dict(binning="log"), "binning must be 'width' or 'quantile'"),
    (dict(range=(1, 0)), "high > low"),
    (dict(peak_bins=2), "peak_bins must be an integer >= 8"),
])
def test_bad_parameters(pair, kwargs, match):
    wi, wf = pair
    with pytest.raises(ValueError, match=match):
        conditional_stats(wi, wf, **kwargs)


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(InputError, match="shape mismatch"):
        conditional_stats(np.zeros(5), np.zeros(6))
    with pytest.raises(ValueError, match="empty"):
        conditional_stats(np.array([]), np.array([]))
    with pytest.raises(ConfigError, match="empty dict"):
        conditional_stats({}, {})
    with pytest.raises(WdevError, match="non-finite"):
        conditional_stats(np.array([np.nan, 1.0]), np.array([0.0, np.inf]))
    with pytest.raises(InputError, match="only on one side: w_init\\['b'\\]"):
        conditional_stats({"a": np.zeros(2), "b": np.zeros(2)}, {"a": np.zeros(2)})
    with pytest.raises(InputError, match="not a numeric array"):
        conditional_stats(np.array(["a", "b"]), np.zeros(2))
    with pytest.raises(InputError, match="no finite w_init falls inside"):
        conditional_stats(np.zeros(3), np.zeros(3), range=(5, 6))


# --- joint and conditional distributions ---------------------------------------------------------

def test_joint_histogram_matches_numpy(pair):
    wi, wf = pair
    h = joint_histogram(wi, wf, bins=(30, 40))
    ref, ex, ey = np.histogram2d(wi, wf, bins=(30, 40))
    np.testing.assert_array_equal(h.counts, ref)
    np.testing.assert_allclose(h.x_edges, ex)
    np.testing.assert_allclose(h.y_edges, ey)
    dens = np.nan_to_num(h.density)
    assert np.isclose((dens * np.outer(np.diff(ex), np.diff(ey))).sum(), 1.0)
    assert np.isnan(h.density[h.counts == 0]).all()
    h2 = joint_histogram(wi, wf, bins=10, range=((-0.1, 0.1), (-0.1, 0.1)))
    ref2, _, _ = np.histogram2d(wi, wf, bins=10, range=((-0.1, 0.1), (-0.1, 0.1)))
    np.testing.assert_array_equal(h2.counts, ref2)
    assert h2.n_outside == wi.size - ref2.sum()
    with pytest.raises(InputError, match="bins \\(x\\) must be"):
        joint_histogram(wi, wf, bins=(0, 3))


def test_conditional_density_matches_numpy_histogram(pair):
    wi, wf = pair
    strips = [(-0.3, -0.25), (-0.02, 0.02)]
    df = conditional_density(wi, wf, strips, bins=25)
    for i, (lo, hi) in enumerate(strips):
        sel = wf[(wi >= lo) & (wi <= hi)]
        dens, e = np.histogram(sel, bins=25, density=True)
        part = df[df["strip"] == i]
        np.testing.assert_allclose(part["density"], dens)
        np.testing.assert_allclose(part["x_left"], e[:-1])
        assert (part["n"] == sel.size).all()
    dev = conditional_density(wi, wf, strips, bins=25, of="deviation")
    sel = (wf - wi)[(wi >= -0.3) & (wi <= -0.25)]
    np.testing.assert_allclose(dev[dev["strip"] == 0]["density"], np.histogram(sel, 25, density=True)[0])
    default = conditional_density(wi, wf)
    assert default["strip"].nunique() == 3
    lo, hi = wi.min(), wi.max()
    assert np.isclose(default["strip_left"].iloc[0], lo) and np.isclose(default["strip_right"].iloc[-1], hi)
    with pytest.raises(InputError, match="holds no weights"):
        conditional_density(wi, wf, [(5, 6)])
    with pytest.raises(InputError, match="of must be"):
        conditional_density(wi, wf, of="initial")


# --- global measures -----------------------------------------------------------------------------

def test_global_measures_against_direct_formulas():
    rng = np.random.default_rng(11)
    init = {"fc1.weight": rng.normal(0, 1, (20, 30)), "fc1.bias": np.zeros(20),
            "fc2.weight": rng.normal(0, 0.5, (20, 20))}
    final = {k: v + rng.normal(0, 0.3, v.shape) for k, v in init.items()}
    final["fc2.weight"][0, 0] = np.nan
    g = global_measures(init, final)
    assert g["layer"].tolist() == ["fc1", "fc2"]  # biases left out by default
    for _, row in g.iterrows():
        x, y = init[f"{row.layer}.weight"].ravel(), final[f"{row.layer}.weight"].ravel()
        ok = np.isfinite(x) & np.isfinite(y)
        x, y = x[ok], y[ok]
        d = y - x
        assert row.n == x.size and row.n_nonfinite == (~ok).sum()
        assert np.isclose(row.mean_abs_dev, np.abs(d).mean())
        assert np.isclose(row.rms_dev, np.sqrt((d ** 2).mean()))
        assert np.isclose(row.max_abs_dev, np.abs(d).max())
        assert np.isclose(row.rel_dist, np.linalg.norm(d) / np.linalg.norm(x))
        assert np.isclose(row.cosine, 1 - distance.cosine(x, y))
        assert np.isclose(row["corr"], stats.pearsonr(x, y).statistic)
        assert np.isclose(row.frac_sign_changed, np.mean(np.sign(x) != np.sign(y)))
        assert np.isclose(row.init_std, x.std())
    assert g.loc[g.layer == "fc2", "n_nonfinite"].item() == 1
    only = global_measures(init, final, layers=["fc1.bias", "fc2"])
    assert only["layer"].tolist() == ["fc1.bias", "fc2"] and np.isnan(only["rel_dist"].iloc[0])
    with pytest.raises(InputError, match="layer 'fc9' not found"):
        global_measures(init, final, layers=["fc9"])
    with pytest.raises(InputError, match="two dicts"):
        global_measures(np.zeros(3), np.zeros(3))


# --- linear law ----------------------------------------------------------------------------------

def test_linear_law_recovers_alpha_and_matches_linregress():
    rng = np.random.default_rng(5)
    wi = rng.uniform(-0.2, 0.2, 30_000)
    d = 0.3 * wi - 0.01 + rng.normal(0, 0.02, wi.size)
    law = linear_law(wi, wi + d, n_boot=300)
    ref = stats.linregress(wi, d)
    assert np.isclose(law.alpha, ref.slope) and np.isclose(law.beta, ref.intercept)
    assert law.alpha_lo < 0.3 < law.alpha_hi and law.beta_lo < -0.01 < law.beta_hi
    # the bootstrap CI has about the width the OLS standard error implies
    assert 0.6 < (law.alpha_hi - law.alpha_lo) / (2 * 1.96 * ref.stderr) < 1.5
    assert law.n == wi.size and law.n_groups == 200


def test_linear_law_ci_coverage():
    rng = np.random.default_rng(9)
    hits = 0
    for _ in range(60):
        wi = rng.uniform(-1, 1, 2000)
        law = linear_law(wi, wi + 0.5 * wi + rng.normal(0, 0.3, wi.size), n_boot=200, n_blocks=100,
                         seed=int(rng.integers(1 << 30)))
        hits += law.alpha_lo <= 0.5 <= law.alpha_hi
    assert 48 <= hits <= 60  # nominal 95% of 60 = 57


def test_linear_law_by_seeds_and_skew_trend():
    rng = np.random.default_rng(2)
    inits = [rng.uniform(-1, 1, 5000) for _ in range(6)]
    # tails skewed in the direction of sign(w_init): skew grows with w_init
    finals = [w + np.sign(w) * rng.exponential(0.1, w.size) * np.abs(w) + rng.normal(0, 0.02, w.size) for w in inits]
    law = linear_law(inits, finals, by="seeds", n_boot=300)
    assert law.n_groups == 6 and law.alpha_lo > 0 and law.skew_slope_lo > 0
    stats_df = conditional_stats(inits, finals, bins=20)
    assert np.corrcoef(stats_df["bin_center"], stats_df["skew"])[0, 1] > 0.8
    sym = [w + 0.1 * w + rng.normal(0, 0.05, w.size) for w in inits]
    law_sym = linear_law(inits, sym, n_boot=300)
    assert law_sym.skew_slope_lo < 0 < law_sym.skew_slope_hi
    with pytest.raises(InputError, match="by='seeds' needs a list"):
        linear_law(inits[0], sym[0], by="seeds")
    with pytest.raises(InputError, match="by must be"):
        linear_law(inits[0], sym[0], by="layers")
    with pytest.raises(InputError, match="at least 3 weights"):
        linear_law(np.ones(10), np.ones(10))


# --- evolution -----------------------------------------------------------------------------------

def test_deviation_quantiles_against_numpy():
    rng = np.random.default_rng(4)
    init = {"w": rng.normal(size=(10, 10))}
    snaps = {e: {"w": init["w"] + rng.normal(0, 0.1 * e, (10, 10))} for e in (5, 1, 10)}
    snaps[10]["w"][0, 0] = np.nan
    df = deviation_quantiles(init, snaps)
    assert df["epoch"].tolist() == [1, 5, 10]
    for _, row in df.iterrows():
        d = (snaps[row.epoch]["w"] - init["w"]).ravel()
        d = d[np.isfinite(d)]
        np.testing.assert_allclose([row.q02, row.q25, row["median"], row.q75, row.q98],
                                   np.percentile(d, [2, 25, 50, 75, 98]))
        assert np.isclose(row.rms, np.sqrt(np.mean(d ** 2))) and np.isclose(row["std"], d.std())
    assert df["n_nonfinite"].tolist() == [0, 0, 1]
    with pytest.raises(InputError, match="non-empty dict"):
        deviation_quantiles(init, {})


class _SnapRun:
    def __init__(self):
        rng = np.random.default_rng(0)
        self.w = {0: {"fc2.weight": rng.normal(size=(8, 8))}}
        for e in (5, 10):
            self.w[e] = {"fc2.weight": self.w[0]["fc2.weight"] + e}
        self.snapshot_epochs = [0, 5, 10]

    def weights(self, which):
        return self.w[{"init": 0, "final": 10}.get(which, which)]


def test_snapshot_quantiles_uses_run_api():
    df = snapshot_quantiles(_SnapRun())
    np.testing.assert_allclose(df["median"], [0, 5, 10])


def test_detect_jump_finds_planted_jump():
    rng = np.random.default_rng(1)
    ep = np.arange(300)
    v = 0.01 + 0.2 * (1 - np.exp(-ep / 40)) * np.exp(rng.normal(0, 0.01, ep.size))
    v[137:] *= 4.0
    j = detect_jump(ep, v)
    assert j["found"] and j["epoch"] == 137
    assert np.isclose(j["factor"], v[137] / v[136]) and np.isclose(j["size"], v[137] - v[136])
    smooth = detect_jump(ep[10:], (0.01 + 0.2 * (1 - np.exp(-ep / 40)))[10:] * np.exp(rng.normal(0, 0.01, 290)))
    assert not smooth["found"]
    from_zero = v.copy()
    from_zero[0] = 0.0  # a deviation is 0 at epoch 0: the step from 0 is not a jump
    assert detect_jump(ep, from_zero)["epoch"] == 137
    w = v.copy()
    w[200:] = np.nan
    assert detect_jump(ep, w, start=150)["epoch"] == 200
    assert detect_jump(ep, v, stop=100)["epoch"] != 137
    with pytest.raises(InputError, match="differ in length"):
        detect_jump(ep, v[:-1])
    with pytest.raises(InputError, match="strictly increasing"):
        detect_jump(ep[::-1], v)


def test_jump_lag_planted():
    ep = np.arange(100)
    loss = np.r_[2.3 * np.exp(-ep[:60] / 8) + 0.02, np.full(40, 16.1)]
    dev = 0.3 * (1 - np.exp(-ep / 10)) + 1e-3
    dev[63:] *= 5
    m = pd.DataFrame({"epoch": ep, "train_loss": loss, "fc2_rel_dist": dev})
    r = jump_lag(m, loss_window=(60, 60))
    assert (r["loss_epoch"], r["dev_epoch"], r["lag"]) == (60, 63, 3) and r["dev_found"] and r["loss_found"]
    assert jump_lag(m, skip=70)["dev_epoch"] != 63
    with pytest.raises(InputError, match="no column 'fc9_rel_dist'"):
        jump_lag(m, deviation="fc9_rel_dist")


# --- matched loss and width scaling --------------------------------------------------------------

def test_deviation_at_loss_against_loop():
    rng = np.random.default_rng(8)
    loss = np.r_[2.3, np.exp(-np.arange(1, 50) / 10) * 2 + rng.normal(0, 0.05, 49)]
    loss[20] = np.nan
    m = pd.DataFrame({"epoch": np.arange(50), "train_loss": loss, "fc2_rel_dist": np.linspace(0, 1, 50)})
    levels = [1.5, 0.5, 0.2, 1e-9]
    df = deviation_at_loss(m, levels)
    for _, row in df.iterrows():
        idx = [i for i, l in enumerate(loss) if np.isfinite(l) and l <= row.level]
        if idx:
            assert row.epoch == idx[0] and row.deviation == m.fc2_rel_dist[idx[0]]
        else:
            assert np.isnan(row.epoch) and np.isnan(row.deviation)
    with pytest.raises(InputError, match="levels is empty"):
        deviation_at_loss(m, [])


def test_power_law_fit_matches_polyfit_and_recovers_exponent():
    rng = np.random.default_rng(6)
    x = np.repeat([10, 30, 100, 300, 1000], 4).astype(float)
    y = 2.0 * x ** -0.5 * np.exp(rng.normal(0, 0.05, x.size))
    fit = power_law_fit(x, y)
    slope, icpt = np.polyfit(np.log(x), np.log(y), 1)
    assert np.isclose(fit.exponent, slope) and np.isclose(fit.prefactor, np.exp(icpt))
    assert fit.exponent_lo < -0.5 < fit.exponent_hi and fit.n == 20 and fit.n_x == 5
    with pytest.raises(InputError, match="needs >= 3 positive points at >= 2 distinct x"):
        power_law_fit([1, 1, 1], [1, 2, 3])


def _curve_run(width, seed, exponent):
    rng = np.random.default_rng(seed)
    ep = np.arange(80)
    loss = 2.3 * np.exp(-ep / 10) * np.exp(rng.normal(0, 0.02, ep.size))
    rel = width ** exponent * (1 - np.exp(-ep / 10)) * np.exp(rng.normal(0, 0.02, ep.size))
    cfg = SimpleNamespace(width=width, seed=seed, dataset="mnist-5k", mask="none", epochs=79)
    return SimpleNamespace(config=cfg, metrics=pd.DataFrame({"epoch": ep, "train_loss": loss, "fc2_rel_dist": rel}))


def test_matched_loss_and_width_scaling():
    runs = [_curve_run(w, s, -0.5) for w in (16, 32, 64, 128) for s in range(3)]
    table = matched_loss_table(runs, [0.5, 0.05])
    assert len(table) == 24 and set(table.columns) >= {"width", "seed", "level", "epoch", "deviation"}
    ws = width_scaling(table)
    assert len(ws) == 2
    assert ((ws.exponent_lo < -0.5) & (-0.5 < ws.exponent_hi)).all() and ws.ntk_in_ci.all()
    up = width_scaling(matched_loss_table([_curve_run(w, s, 0.3) for w in (16, 32, 64) for s in range(3)], [0.1]))
    assert up.exponent_lo.item() > 0 and not up.ntk_in_ci.item()
    assert width_scaling(table[table.width < 64]).empty  # fewer than 3 widths


def test_docstring_examples():
    result = doctest.testmod(dv, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted >= 10 and result.failed == 0


def test_evolution_table_merges_probes_and_snapshot_quantiles():
    run = _SnapRun()
    run.metrics = pd.DataFrame({"epoch": np.arange(11), "train_loss": np.linspace(2, 0.1, 11),
                                "test_loss": 1.0, "fc2_rel_dist": np.linspace(0, 1, 11),
                                "fc1_rel_dist": 0.0})
    ev = dv.evolution_table(run, "fc2")
    assert ev["epoch"].tolist() == list(range(11)) and "rel_dist" in ev and "fc1_rel_dist" not in ev
    np.testing.assert_allclose(ev.loc[[0, 5, 10], "median"], [0, 5, 10])
    assert ev["median"].isna().sum() == 8


def test_conditional_by_width_matches_direct_computation():
    from types import SimpleNamespace

    from wdev_utils.deviation import conditional_by_width, conditional_stats

    rng = np.random.default_rng(3)

    def fake_run(width, seed):
        a = np.sqrt(6 / (2 * width))
        wi = rng.uniform(-a, a, (width, width))
        wf = wi + 0.3 * wi + rng.normal(0, 0.01 * a, wi.shape)
        weights = {"init": {"fc2.weight": wi}, "final": {"fc2.weight": wf}}
        return SimpleNamespace(config=SimpleNamespace(width=width, seed=seed), weights=lambda w: weights[w])

    runs = [fake_run(w, s) for w in (20, 40) for s in (0, 1)]
    stats, laws = conditional_by_width(runs, "fc2", bins=10, n_boot=50)
    assert sorted(stats["width"].unique()) == [20, 40] and list(laws["width"]) == [20, 40]
    for width in (20, 40):
        rs = [r for r in runs if r.config.width == width]
        a = np.sqrt(6 / (2 * width))
        direct = conditional_stats([r.weights("init")["fc2.weight"] / a for r in rs],
                                   [r.weights("final")["fc2.weight"] / a for r in rs], bins=10, range=(-1, 1))
        got = stats[stats["width"] == width].drop(columns="width").reset_index(drop=True)
        pd.testing.assert_frame_equal(got, direct, check_like=True)
        law = laws.set_index("width").loc[width]
        assert law["a"] == pytest.approx(a) and law["alpha_lo"] < 0.3 < law["alpha_hi"]
        assert law["slope"] == law["alpha"] and law["intercept"] == pytest.approx(law["beta"] / a)


def test_conditional_stats_of_final_matches_binned_statistic_of_w_final():
    from scipy.stats import binned_statistic

    from wdev_utils.deviation import conditional_stats

    rng = np.random.default_rng(11)
    wi = rng.uniform(-1, 1, 5000)
    wf = 0.8 * wi + rng.normal(0, 0.1, wi.size)
    st = conditional_stats(wi, wf, bins=8, of="final")
    for stat in ("mean", "median", "count"):
        expected = binned_statistic(wi, wf, stat, bins=8, range=(wi.min(), wi.max())).statistic
        np.testing.assert_allclose(st[stat], expected, rtol=1e-12)
    with pytest.raises(ValueError, match="of='w_f'"):
        conditional_stats(wi, wf, of="w_f")


def test_peak_offset_is_count_weighted_and_skips_small_and_flat_bins():
    from wdev_utils.deviation import peak_offset

    df = pd.DataFrame({"count": [5, 200, 300, 400], "peak": [9.0, 0.2, -0.3, 1.0],
                       "q25": [-1.0, -0.5, -1.0, 0.0], "q75": [1.0, 0.5, 1.0, 0.0]})
    expected = (200 * 0.2 / 1.0 + 300 * 0.3 / 2.0) / 500  # bin 0 too small, bin 3 has zero IQR
    assert peak_offset(df, min_count=100) == pytest.approx(expected)
    assert peak_offset(df.assign(count=[5, 1, 1, 1]), min_count=100) == pytest.approx(
        (5 * 9.0 / 2 + 1 * 0.2 + 1 * 0.15) / 7), "with no bin that large, every non-empty bin counts"
    assert np.isnan(peak_offset(df.iloc[[3]]))

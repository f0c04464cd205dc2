"""Figures: labelled axes, log scales, seeds shown, GIFs that decode, clear errors on bad tables."""
import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from matplotlib.collections import PolyCollection  # noqa: E402
from PIL import Image  # noqa: E402

from wdev_utils import deviation, plots  # noqa: E402
from wdev_utils.errors import WdevError  # noqa: E402

RNG = np.random.default_rng(0)


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def assert_labelled(fig):
    """Every axes has x and y labels; a colour bar has its label on its long axis."""
    assert fig.axes, "figure has no axes"
    for ax in fig.axes:
        if hasattr(ax, "_colorbar"):
            assert ax.get_ylabel() or ax.get_xlabel(), "colour bar without a label"
            continue
        assert ax.get_xlabel(), f"axes {ax.get_title()!r} has no x label"
        assert ax.get_ylabel(), f"axes {ax.get_title()!r} has no y label"


def _curves(widths=(10, 100), seeds=(0, 1, 2), epochs=20):
    rows = []
    for w in widths:
        for s in seeds:
            loss = np.exp(-np.arange(epochs + 1) / (5 + s)) * (1 + 10 / w)
            rows += [{"width": w, "seed": s, "epoch": e, "train_loss": l, "test_loss": 1.2 * l}
                     for e, l in enumerate(loss)]
    return pd.DataFrame(rows)


def test_loss_curves_log_scale_and_band_spans_the_seeds():
    df = _curves()
    fig = plots.loss_curves(df)
    assert_labelled(fig)
    ax = fig.axes[0]
    assert ax.get_yscale() == "log"
    bands = [c for c in ax.collections if isinstance(c, PolyCollection)]
    assert len(bands) == 2  # one band per width
    # independent check: the band at epoch 5 for width 10 spans the seeds, the line is their mean
    sel = df[(df.width == 10) & (df.epoch == 5)]["train_loss"]
    verts = bands[0].get_paths()[0].vertices
    at5 = verts[np.isclose(verts[:, 0], 5)][:, 1]
    np.testing.assert_allclose(sorted(at5), [sel.min(), sel.max()], rtol=1e-6)
    line = ax.get_lines()[0]
    np.testing.assert_allclose(line.get_ydata()[5], sel.mean(), rtol=1e-6)


def test_missing_column_is_named():
    with pytest.raises(WdevError, match="test_loss"):
        plots.loss_curves(_curves().drop(columns="test_loss"))


def test_phase_diagram_one_point_per_event_and_regimes_shaded():
    ev = pd.DataFrame({"width": [10, 10, 50, 50, 200, 200], "seed": [0, 1] * 3,
                       "min_train_epoch": [90, 95, 30, 40, 80, 85], "min_test_epoch": [20, 25, 10, 12, 15, 14],
                       "divergence_epoch": [np.nan, np.nan, 45, 50, np.nan, np.nan],
                       "regime": ["low trainability"] * 2 + ["untrainability"] * 2 + ["high trainability"] * 2})
    fig = plots.phase_diagram(ev)
    assert_labelled(fig)
    ax = fig.axes[0]
    offsets = [len(c.get_offsets()) for c in ax.collections if hasattr(c, "get_offsets") and
               not isinstance(c, PolyCollection)]
    assert sorted(offsets) == sorted([6, 6, 2])
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert {"regime: low trainability", "regime: untrainability", "regime: high trainability"} <= set(labels)


def test_by_width_points_per_seed_and_reference_lines():
    t = pd.DataFrame({"width": [10, 10, 100, 100, 1000, 1000], "seed": [0, 1] * 3,
                      "min_train_loss": [0.5, 0.6, 0.05, 0.04, 0.01, 0.012]})
    fig = plots.by_width(t, {"min_train_loss": "train"}, ylabel="minimum loss", logx=True,
                         lines={"1/sqrt(width)": ([10, 1000], [0.3, 0.03])})
    assert_labelled(fig)
    ax = fig.axes[0]
    assert (ax.get_xscale(), ax.get_yscale()) == ("log", "log")
    assert len(ax.collections[0].get_offsets()) == 6
    mean_line = ax.get_lines()[0]
    np.testing.assert_allclose(mean_line.get_ydata(), t.groupby("width")["min_train_loss"].mean().to_numpy())
    assert "1/sqrt(width)" in [t.get_text() for t in ax.get_legend().get_texts()]


def test_heatmap_cells_are_pivoted_means():
    t = pd.DataFrame({"width": [10, 10, 10, 100, 100, 100], "lr": [0.1, 0.1, 1.0, 0.1, 1.0, 1.0],
                      "loss": [0.1, 0.3, 2.0, 0.01, 16.0, 15.0], "regime": list("aabbcc")})
    fig = plots.heatmap(t, x="width", y="lr", value="loss", label="final loss", annot="regime")
    assert_labelled(fig)
    img = fig.axes[0].get_images()[0].get_array()
    # rows: lr descending (1.0, 0.1); columns: width ascending (10, 100)
    np.testing.assert_allclose(np.asarray(img), [[2.0, 15.5], [0.2, 0.01]])
    assert {"a", "b", "c"} == {t.get_text() for t in fig.axes[0].texts}


def test_joint_histogram_with_deviation_tables():
    wi = RNG.uniform(-0.1, 0.1, 20_000)
    wf = wi + 0.3 * wi + RNG.normal(0, 0.01, wi.size)
    stats = deviation.conditional_stats(wi, wi + wf, bins=30)  # statistics of w_f itself per bin
    strips = deviation.conditional_density(wi, wf, deviation.default_strips(wi))
    fig = plots.joint_histogram(deviation.joint_histogram(wi, wf, bins=60), stats, strips)
    assert_labelled(fig)
    assert len([a for a in fig.axes if not hasattr(a, "_colorbar")]) == 4
    assert all(a.get_yscale() == "log" for a in fig.axes[2:] if not hasattr(a, "_colorbar"))


def test_conditional_moments_and_fit_band():
    wi = RNG.uniform(-0.1, 0.1, 20_000)
    frames = [deviation.conditional_stats(wi, wi * (1 + 0.1 * k) + RNG.normal(0, 0.01, wi.size), bins=20)
              .assign(width=w) for k, w in enumerate((50, 500))]
    fits = pd.DataFrame({"width": [50, 500], "slope": [0.0, 0.1], "intercept": [0, 0],
                         "slope_lo": [-0.01, 0.09], "slope_hi": [0.01, 0.11]})
    stats = pd.concat(frames)
    fig = plots.conditional_moments(stats, hue="width", fits=fits)
    assert_labelled(fig)
    # linear axes: the mean line per width is the conditional mean itself (one row per bin)
    np.testing.assert_allclose(fig.axes[0].get_lines()[0].get_ydata(), frames[0]["mean"], rtol=1e-6)
    assert len(fig.axes) == 4
    dashed = [ln for ln in fig.axes[0].get_lines() if ln.get_linestyle() == "--"]
    assert len(dashed) == 2


def test_deviation_evolution_marks_events():
    q = pd.DataFrame({"epoch": [0, 5, 10], "q02": [0, -1, -2], "q25": [0, -.5, -1], "median": [0, 0, 0],
                      "q75": [0, .5, 1], "q98": [0, 1, 2]})
    m = _curves(widths=(10,), seeds=(0,), epochs=10)
    fig = plots.deviation_evolution(q, m, events={"loss jump": 7, "never": np.nan})
    assert_labelled(fig)
    assert any("epoch 7" in t.get_text() for t in fig.axes[1].get_legend().get_texts())
    assert fig.axes[0].get_yscale() == "log"


def test_mark_row_and_contrast():
    mats = [RNG.normal(size=(16, 16)) for _ in range(3)]
    fig = plots.mark_row(mats, [0, 5, 10], _curves(widths=(16,), seeds=(0,), epochs=10), label="w=16")
    assert_labelled(fig)
    table = pd.DataFrame({"epoch": [0, 5, 10] * 2, "contrast": [1, .8, .6, 1, .3, 0],
                          "network": ["stable"] * 3 + ["unstable"] * 3})
    fig = plots.mark_contrast(table, levels={"visible": 0.5, "erased": 0.2})
    assert_labelled(fig)
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert {"stable", "unstable", "visible", "erased"} <= set(labels)


def test_probe_curves_and_small_figures():
    df = _curves().assign(fc1_rel_dist=lambda d: 1 - d.train_loss / 3, fc2_rel_dist=lambda d: 1 - d.test_loss / 4)
    assert_labelled(plots.probe_curves(df, {"fc1_rel_dist": "fc1", "fc2_rel_dist": "fc2"}, ylabel="rel. dist."))
    w = {"fc1": RNG.uniform(-0.08, 0.08, 1000), "fc2": RNG.uniform(-0.17, 0.17, 1000)}
    assert_labelled(plots.weight_histograms(w, {"fc1": 0.08, "fc2": 0.17}))
    gap = np.linspace(-20, 20, 9)
    assert_labelled(plots.loss_functions(pd.DataFrame({"gap": gap, "plain": np.log1p(np.exp(-gap))})))


def test_sample_images_titles_each_class():
    x = RNG.uniform(0, 1, size=(40, 64)).astype(np.float32)
    y = np.repeat(np.arange(4), 10)
    fig = plots.sample_images(x, y, per_class=2)
    assert [a.get_title() for a in fig.axes[:4]] == ["class 0", "class 1", "class 2", "class 3"]
    with pytest.raises(WdevError, match="square"):
        plots.sample_images(x[:, :60], y)


def test_metrics_frame_adds_config_columns():
    class FakeRun:
        def __init__(self, width, seed):
            self.config = type("Cfg", (), {"width": width, "seed": seed})()
            self.metrics = pd.DataFrame({"epoch": [0, 1], "train_loss": [2.3, 1.0 / width]})

    df = plots.metrics_frame([FakeRun(10, 0), FakeRun(20, 1)], fields=("width", "seed"))
    assert df[["width", "seed", "epoch"]].values.tolist() == [[10, 0, 0], [10, 0, 1], [20, 1, 0], [20, 1, 1]]
    np.testing.assert_allclose(df["train_loss"], [2.3, 0.1, 2.3, 0.05])
    with pytest.raises(WdevError, match="no runs"):
        plots.metrics_frame([])


def test_width_palette_distinct_and_ordered():
    pal = plots.width_palette([300, 10, 100, 10])
    assert list(pal) == [10, 100, 300]
    assert len(set(pal.values())) == 3


def test_animate_matrix_writes_decodable_gif(tmp_path):
    mats = [np.outer(np.arange(12) - 6, np.ones(12)) * (1 - k / 5) for k in range(5)]
    path = plots.animate_matrix(mats, [0, 10, 20, 30, 40], tmp_path / "sub" / "m.gif", title="w=12")
    assert path.exists() and path.stat().st_size > 0
    with Image.open(path) as im:
        assert im.format == "GIF"
        assert im.n_frames == 5
        frames = []
        for i in range(im.n_frames):
            im.seek(i)
            frames.append(np.asarray(im.convert("L"), dtype=float))
    # the matrix fades over time, so the frames differ
    assert np.abs(frames[0] - frames[-1]).mean() > 1
    with pytest.raises(WdevError, match="one per epoch"):
        plots.animate_matrix(mats, [0, 1], tmp_path / "bad.gif")

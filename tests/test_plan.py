"""Run plans: which runs each notebook needs, shared between notebooks, deduplicated and valid."""
import json

import nbformat
import pytest

from wdev_utils import plan
from wdev_utils.book import toc_notebooks
from wdev_utils.config import RunConfig
from wdev_utils.errors import ConfigError
from wdev_utils.profiles import load_profile, profile_names

GRID = {"dataset": "mnist-5k", "widths": [10, 20], "seeds": [0, 1, 2], "epochs": 12, "lr": 0.1,
        "batch_size": 64, "snapshots": 4, "device": "cpu"}


def test_snapshot_schedule_is_evenly_spaced_and_interior():
    assert plan.snapshot_schedule(100, 4) == (25, 50, 75)
    assert plan.snapshot_schedule(10, 3) == (3, 7)  # round(3.33), round(6.67)
    assert plan.snapshot_schedule(5, 1) == ()
    assert plan.snapshot_schedule(3, 10) == (1, 2)  # more intervals than epochs: each epoch once
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ConfigError, match="snapshots"):
            plan.snapshot_schedule(10, bad)


def test_grid_notebook_gets_widths_times_seeds_with_the_given_settings():
    cfgs = plan.notebook_runs("03_regimes", GRID)
    assert [(c.width, c.seed) for c in cfgs] == [(w, s) for w in (10, 20) for s in (0, 1, 2)]
    assert all(isinstance(c, RunConfig) for c in cfgs)
    assert {(c.epochs, c.lr, c.batch_size, c.snapshot_epochs, c.device, c.mask) for c in cfgs} == \
        {(12, 0.1, 64, (3, 6, 9), "cpu", "none")}


def test_notebooks_with_the_same_settings_share_their_runs():
    ids = {name: {c.run_id for c in plan.notebook_runs(name, GRID)}
           for name in ("03_regimes", "05_conditional_deviation", "06_evolution", "07_width")}
    assert len({frozenset(v) for v in ids.values()}) == 1
    one_width = {c.run_id for c in plan.notebook_runs("04_initial_vs_final", {**GRID, "width": 20})}
    assert one_width <= ids["03_regimes"] and len(one_width) == 3


def test_other_data_sets_chapter_plans_the_grid_on_each_data_set_named():
    alone = plan.notebook_runs("08_other_datasets", GRID)
    assert {c.run_id for c in alone} == {c.run_id for c in plan.notebook_runs("03_regimes", GRID)}
    both = plan.notebook_runs("08_other_datasets", {**GRID, "datasets": ["mnist", "fashion-mnist"]})
    assert [c.dataset for c in both] == ["mnist"] * 6 + ["fashion-mnist"] * 6
    assert [(c.width, c.seed) for c in both[:6]] == [(c.width, c.seed) for c in both[6:]] == \
        [(w, s) for w in (10, 20) for s in (0, 1, 2)]
    paper = plan.notebook_params("08_other_datasets", load_profile("paper").notebook_parameters("08_other_datasets"))
    assert paper["datasets"] == ["mnist", "fashion-mnist"]


def test_undeclared_parameters_are_ignored_and_missing_ones_take_the_notebook_defaults():
    defaults = plan.notebook_defaults("03_regimes")
    cfgs = plan.notebook_runs("03_regimes", {"epochs": 7, "not_a_parameter": 1})
    assert {c.epochs for c in cfgs} == {7}
    assert sorted({c.width for c in cfgs}) == sorted(defaults["widths"])
    assert len(cfgs) == len(defaults["widths"]) * len(defaults["seeds"])
    assert plan.notebook_runs("01_data_model", GRID) == []


def test_letter_mark_runs_carry_the_mask_and_their_own_settings():
    p = {"stable_width": 40, "unstable_width": 20, "mark": "b", "mark_epochs": 9, "stable_lr": 0.1,
         "unstable_lr": 0.7, "mark_seed": 3, "mark_snapshots": 3}
    cfgs = plan.notebook_runs("02_letter_mark", p)
    assert [(c.width, c.mask, c.epochs, c.lr, c.seed, c.snapshot_epochs) for c in cfgs] == \
        [(40, "b", 9, 0.1, 3, (3, 6)), (20, "b", 9, 0.7, 3, (3, 6))]
    # the same width at two learning rates is two runs
    same = plan.notebook_runs("02_letter_mark", {**p, "unstable_width": 40})
    assert [(c.width, c.lr) for c in same] == [(40, 0.1), (40, 0.7)]


def test_beyond_plans_grid_comparisons_and_lr_map_without_duplicates():
    p = {**GRID, "lrs": [0.1, 1.0], "lr_widths": [10, 20], "lr_seeds": [0], "lr_epochs": 12,
         "compare_width": 20, "compare_lr": 0.1}
    cfgs = plan.notebook_runs("09_beyond", p)
    ids = [c.run_id for c in cfgs]
    assert len(ids) == len(set(ids))
    # the lr map at lr 0.1 and seed 0 repeats grid runs, and so does the paper's variant of the comparison
    grid = {c.run_id for c in plan.grid_runs(p)}
    lr_map = {c.run_id for c in plan.lr_grid_runs(p)}
    compare = plan.comparison_runs(p)
    assert len(grid & lr_map) == 2
    assert {(c.init, c.loss) for c in compare} == set(plan.COMPARISONS)
    assert set(ids) == grid | lr_map | {c.run_id for c in compare}


def test_unknown_notebook_and_bad_values_are_clear_errors(tmp_path):
    with pytest.raises(ConfigError, match="no run plan for notebook '99_nothing'"):
        plan.notebook_runs("99_nothing", {})
    with pytest.raises(ConfigError, match="width=0"):
        plan.notebook_runs("03_regimes", {**GRID, "widths": [0]})
    with pytest.raises(ConfigError, match="no notebook"):
        plan.notebook_defaults("03_regimes", folder=tmp_path)
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("x = 1")]
    (tmp_path / "03_regimes.ipynb").write_text(json.dumps(nb))
    with pytest.raises(ConfigError, match="exactly one cell tagged 'parameters', found 0"):
        plan.notebook_defaults("03_regimes", folder=tmp_path)


def test_notebook_defaults_reads_the_parameters_cell(tmp_path):
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell('a = 1  # comment\nb = [0.1, 2]\nc = None\nd = "x"')
    cell.metadata["tags"] = ["parameters"]
    nb.cells = [nbformat.v4.new_code_cell("import os"), cell]
    (tmp_path / "nb.ipynb").write_text(json.dumps(nb))
    assert plan.notebook_defaults("nb", folder=tmp_path) == {"a": 1, "b": [0.1, 2], "c": None, "d": "x"}


def test_select_keeps_config_order_and_names_missing_runs():
    class FakeRun:
        def __init__(self, cfg):
            self.config = cfg

    cfgs = plan.grid_runs(GRID)
    runs = [FakeRun(c) for c in reversed(cfgs)]
    assert [r.config for r in plan.select(runs, cfgs)] == cfgs
    with pytest.raises(ConfigError, match="not among those loaded"):
        plan.select(runs[:2], cfgs)


@pytest.mark.parametrize("profile", profile_names())
def test_every_profile_plans_valid_deduplicated_runs(profile):
    prof = load_profile(profile)
    seen = {}
    for name in toc_notebooks():
        cfgs = plan.notebook_runs(name, prof.notebook_parameters(name))
        ids = [c.run_id for c in cfgs]
        assert len(ids) == len(set(ids)), f"{profile}/{name} plans a run twice"
        for c in cfgs:
            seen[c.run_id] = c
    assert seen, f"profile {profile} plans no runs"

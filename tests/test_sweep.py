"""Sweeps: local pool and Dask give the same runs; kills resume; failures are reported."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.numpy import load_file

from wdev_utils.config import RunConfig
from wdev_utils.errors import ConfigError
from wdev_utils.store import RunStore
from wdev_utils.sweep import (dataset_sizes, estimate_plan, estimate_wall_seconds, longest_first, makespan,
                              run_flops, run_sweep)
from wdev_utils.train import ensemble_groups

BASE = RunConfig(dataset="mnist-5k", width=16, epochs=3, batch_size=256, device="cpu")
CONFIGS = [BASE.replace(seed=s) for s in (0, 1)] + [BASE.replace(width=24, seed=0)]


def _finals(store: RunStore, configs) -> dict[str, dict]:
    return {c.run_id: load_file(store.run(c).path / "final.safetensors") for c in configs}


def test_groups_are_seeds_of_one_config():
    groups = ensemble_groups(CONFIGS)
    assert sorted(len(g) for g in groups) == [1, 2]
    assert {c.seed for g in groups if len(g) == 2 for c in g} == {0, 1}


def test_groups_shrink_evenly_to_give_every_worker_one_but_keep_two_members():
    many = [BASE.replace(width=w, seed=s) for w in (16, 24) for s in range(10)]
    assert len(ensemble_groups(many, max_members=1)) == 20
    assert sorted(len(g) for g in ensemble_groups(many)) == [10, 10]
    assert sorted(len(g) for g in ensemble_groups(many, max_members=4)) == [3, 3, 3, 3, 4, 4]
    for workers in (3, 5, 8, 100):
        groups = ensemble_groups(many, min_groups=workers)
        assert sorted(c.run_id for g in groups for c in g) == sorted(c.run_id for c in many)
        assert all(len({c.replace(seed=0).run_id for c in g}) == 1 for g in groups), "one configuration a group"
        sizes = sorted(len(g) for g in groups)
        assert len(groups) >= min(workers, 10) and sizes[0] >= 2 and sizes[-1] - sizes[0] <= 1
        counts = {len(ensemble_groups(many, max_members=m)) for m in range(2, 17)}
        assert len(groups) == min([c for c in counts if c >= workers] or [max(counts)]), "no smaller than needed"
    with pytest.raises(ConfigError, match="max_members=0"):
        ensemble_groups(many, max_members=0)


def test_flops_count_matches_hand_count():
    cfg = BASE.replace(width=100, epochs=2)
    per_sample = 784 * 100 + 100 * 100 + 100 * 10
    assert run_flops(cfg, n_train=4000, n_test=1000, input_dim=784, n_classes=10) == \
        2 * (6 * 4000 + 2 * 1000) * per_sample


def test_dask_local_cluster_matches_local_pool_bit_for_bit(tmp_path):
    local, dask = RunStore(tmp_path / "local"), RunStore(tmp_path / "dask")
    r1 = run_sweep(CONFIGS, local, workers=2, progress=False)
    r2 = run_sweep(CONFIGS, dask, dask_local=2, progress=False)
    assert not r1.failed and not r2.failed
    assert sorted(r1.trained) == sorted(r2.trained) == sorted(c.run_id for c in CONFIGS)
    a, b = _finals(local, CONFIGS), _finals(dask, CONFIGS)
    for rid in a:
        for name in a[rid]:
            assert (a[rid][name] == b[rid][name]).all(), f"{rid} {name} differs between executors"
    again = run_sweep(CONFIGS, dask, dask_local=2, progress=False)
    assert again.trained == [] and sorted(again.reused) == sorted(r2.trained)


def test_failing_run_is_reported_and_others_finish(tmp_path):
    store = RunStore(tmp_path / "runs")
    bad = RunConfig(dataset="hasyv2", width=8, epochs=1, device="cpu")
    os.environ["WDEV_DATA"] = str(tmp_path / "no-data")
    try:
        result = run_sweep([bad, CONFIGS[0]], store, workers=2, progress=False)
    finally:
        del os.environ["WDEV_DATA"]
    assert list(result.failed) == [bad.run_id]
    assert "hasyv2" in result.failed[bad.run_id]
    assert result.trained == [CONFIGS[0].run_id]
    assert store.run(CONFIGS[0]).is_done and not store.run(bad).is_done
    assert bad.run_id in result.summary() and "1 failed" in result.summary()


SWEEP_SCRIPT = """
import sys
from wdev_utils.config import RunConfig
from wdev_utils.errors import ConfigError
from wdev_utils.store import RunStore
from wdev_utils.sweep import run_sweep
base = RunConfig(dataset="mnist-5k", width=64, epochs=40, batch_size=64, device="cpu")
configs = [base.replace(width=w) for w in (64, 96, 128)]
run_sweep(configs, RunStore(sys.argv[1]), workers=1, progress=False)
"""


def test_killed_sweep_reruns_only_missing_runs(tmp_path):
    store_dir = tmp_path / "runs"
    proc = subprocess.Popen([sys.executable, "-c", SWEEP_SCRIPT, str(store_dir)], start_new_session=True)
    deadline = time.time() + 300
    while time.time() < deadline and not list(store_dir.glob("*/DONE")):
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = {p.parent.name for p in store_dir.glob("*/DONE")}
    assert 1 <= len(done_before) < 3, "the sweep should have been killed part-way"
    base = RunConfig(dataset="mnist-5k", width=64, epochs=40, batch_size=64, device="cpu")
    configs = [base.replace(width=w) for w in (64, 96, 128)]
    result = run_sweep(configs, RunStore(store_dir), workers=1, progress=False)
    assert set(result.reused) == done_before
    assert set(result.trained) == {c.run_id for c in configs} - done_before
    assert not result.failed


def test_estimate_for_an_absent_data_set_uses_its_published_size(tmp_path, monkeypatch):
    monkeypatch.setenv("WDEV_DATA", str(tmp_path / "no-data"))
    cfg = RunConfig(dataset="hasyv2", width=16, epochs=2, device="cpu")
    (row,) = estimate_plan([cfg], RunStore(tmp_path / "runs"))
    expected = run_flops(cfg, n_train=151406, n_test=16827, input_dim=1024, n_classes=369)
    assert row["gflop"] == pytest.approx(expected / 1e9)
    assert row["status"] == "missing" and not row["done"] and row["est_s_cpu"] > 0


def test_makespan_hands_each_job_to_the_first_free_worker():
    assert makespan([5, 4, 3, 3], 2) == 8  # 5 | 4, then 3 on the second (7), 3 on the first (8)
    assert makespan([4, 2, 1, 1], 2) == 4  # 4 | 2, then both 1s on the second
    assert makespan([1, 1, 2, 4], 2) == 5  # shortest first: 1 | 1, 2 on the first (3), 4 on the second (5)
    assert makespan([2.5, 1, 1], 1) == 4.5 and makespan([2.5, 1, 1], 10) == 2.5 and makespan([], 3) == 0


def test_sweeps_hand_out_the_longest_ensembles_first():
    sizes = dataset_sizes()
    groups = ensemble_groups([BASE.replace(width=w, seed=s, epochs=e) for w, e in ((16, 3), (64, 3), (24, 30))
                              for s in range(2)])
    ordered = longest_first(groups, sizes)
    cost = [sum(run_flops(c, **sizes[c.dataset]) for c in g) for g in ordered]
    assert cost == sorted(cost, reverse=True) and [g[0].width for g in ordered] == [24, 64, 16]


def test_wall_time_estimate_splits_ensembles_for_the_workers(tmp_path):
    configs = [BASE.replace(width=w, seed=s) for w in (16, 24) for s in range(4)]
    one = estimate_plan(configs, RunStore(tmp_path / "runs"), workers=1)
    four = estimate_plan(configs, RunStore(tmp_path / "runs"), workers=4)
    assert len({r["group"] for r in one}) == 2 and len({r["group"] for r in four}) == 4
    assert {r["members"] for r in four} == {2}
    total = sum(r["est_s_cpu"] for r in four)
    groups = {}
    for r in four:
        groups[r["group"]] = groups.get(r["group"], 0) + r["est_s_cpu"]
    wall = estimate_wall_seconds(four, 4)
    assert wall == pytest.approx(max(groups.values())) and wall < total
    assert estimate_wall_seconds(four, 1) == pytest.approx(total)
    # without a store the plan starts from nothing; with one, finished runs drop out of the wall time
    scratch = estimate_plan(configs, None, workers=4)
    assert {r["status"] for r in scratch} == {"missing"} and [r["group"] for r in scratch] == [r["group"] for r in four]
    store = RunStore(tmp_path / "runs")
    run_sweep(configs[:4], store, workers=1, progress=False)  # every seed of width 16
    partial = estimate_plan(configs, store, workers=4)
    assert sum(r["done"] for r in partial) == 4
    left = [r for r in partial if not r["done"]]  # width 24: two ensembles of two (never fewer members)
    assert {r["members"] for r in left} == {2} and len({r["group"] for r in left}) == 2
    per_group = [sum(r["est_s_cpu"] for r in left if r["group"] == g) for g in {r["group"] for r in left}]
    assert estimate_wall_seconds(partial, 4) == pytest.approx(max(per_group))

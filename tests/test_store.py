"""The run store: atomic files, safetensors and CSV checks, corrupt runs reported incomplete, listing."""
import json
import os
import types

import numpy as np
import pytest
from safetensors.numpy import save_file

from wdev_utils import store as store_mod
from wdev_utils.config import RunConfig
from wdev_utils.errors import StoreError
from wdev_utils.probes import METRIC_COLUMNS
from wdev_utils.store import (RunStore, atomic_write, load_tensors, read_metrics, safetensors_shapes, write_json,
                              write_metrics)
from wdev_utils.train import train_runs

CFG = RunConfig(dataset="mnist-5k", width=8, epochs=3, batch_size=32, snapshot_epochs=(2,), device="cpu")


def _dataset():
    rng = np.random.default_rng(1)
    x = rng.random((120, 6)).astype(np.float32)
    y = (x[:, 0] > x[:, 1]).astype(np.int64)
    return types.SimpleNamespace(x_train=x[:90], y_train=y[:90], x_test=x[90:], y_test=y[90:], n_classes=2,
                                 input_dim=6, name="tiny", source="test")


def _train(path, cfg=CFG):
    return train_runs([cfg], path, dataset=_dataset(), progress=False)[0]


# ---------- files ----------

def test_atomic_write_replaces_whole_files_and_leaves_no_temp(tmp_path, monkeypatch):
    f = tmp_path / "sub" / "a.txt"
    atomic_write(f, "old")
    atomic_write(f, b"new")
    assert f.read_text() == "new" and os.listdir(f.parent) == ["a.txt"]

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(store_mod.os, "replace", broken_replace)
    with pytest.raises(OSError):
        atomic_write(f, "half")
    assert f.read_text() == "new" and os.listdir(f.parent) == ["a.txt"]


def test_json_writes_non_finite_numbers_as_null(tmp_path):
    write_json(tmp_path / "s.json", {"a": float("nan"), "b": 1.5, "c": np.float64("inf")})
    assert json.loads((tmp_path / "s.json").read_text()) == {"a": None, "b": 1.5, "c": None}


def test_safetensors_checks_catch_truncation_and_garbage(tmp_path):
    f = tmp_path / "w.safetensors"
    save_file({"a": np.arange(12, dtype=np.float32).reshape(3, 4), "b": np.zeros(5, dtype=np.uint8)}, str(f))
    assert safetensors_shapes(f) == {"a": (3, 4), "b": (5,)}
    assert np.array_equal(load_tensors(f)["a"], np.arange(12).reshape(3, 4))
    data = f.read_bytes()
    for bad in (data[:-1], data[:5], b"", b"\xff" * 8 + data[8:], data[:8] + b"{not json" + data[17:]):
        f.write_bytes(bad)
        with pytest.raises(StoreError, match="w.safetensors"):
            safetensors_shapes(f)
        with pytest.raises(StoreError):
            load_tensors(f)


def test_metrics_round_trip_is_exact_and_damage_is_caught(tmp_path):
    rows = np.random.default_rng(0).normal(size=(4, len(METRIC_COLUMNS)))
    rows[:, 0] = np.arange(4)
    rows[2, 1], rows[3, 2] = np.nan, np.inf
    f = tmp_path / "metrics.csv"
    write_metrics(f, rows)
    back = read_metrics(f)
    assert np.array_equal(back, rows, equal_nan=True)
    text = f.read_text()
    for bad in (text[: len(text) // 2], text.replace("train_loss", "loss"), text.replace("\n2,", "\n5,"),
                text + "4,1,2\n", "\x00\x01garbage"):
        f.write_text(bad)
        with pytest.raises(StoreError, match="metrics.csv"):
            read_metrics(f)


# ---------- runs ----------

def _damage_truncate(p):
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])


def _damage_flip(p):
    b = bytearray(p.read_bytes())
    b[-3] ^= 0x55
    p.write_bytes(bytes(b))


DAMAGE = {
    "truncated metrics.csv": ("metrics.csv", _damage_truncate),
    "edited metrics.csv": ("metrics.csv", _damage_flip),
    "truncated final weights": ("final.safetensors", _damage_truncate),
    "garbage weights header": ("init.safetensors", lambda p: p.write_bytes(b"\x10" * p.stat().st_size)),
    "missing snapshot": ("snapshots/epoch-00002.safetensors", lambda p: p.unlink()),
    "garbage config.json": ("config.json", lambda p: p.write_text("{oops")),
    "missing summary": ("summary.json", lambda p: p.unlink()),
    "garbage DONE": ("DONE", lambda p: p.write_text("[1, 2")),
    "missing DONE": ("DONE", lambda p: p.unlink()),
}


@pytest.mark.parametrize("case", list(DAMAGE))
def test_damaged_run_is_incomplete_not_a_crash_and_is_retrained(tmp_path, case):
    run = _train(tmp_path)
    final = run.weights("final")
    rel, damage = DAMAGE[case]
    damage(run.path / rel)
    run.refresh()
    assert run.status == "incomplete" and not run.is_done
    assert run.problems() and all(isinstance(p, str) for p in run.problems())
    listed = RunStore(tmp_path).list()
    assert [r.status for r in listed] == (["incomplete"] if rel != "config.json" else [])
    run.summary  # noqa: B018 - reading must not raise
    again = _train(tmp_path)
    assert again.status == "done"
    for k, v in again.weights("final").items():
        assert np.array_equal(v, final[k]), k


def test_run_api_for_done_and_missing_runs(tmp_path):
    store = RunStore(tmp_path)
    missing = store.run(CFG)
    assert missing.status == "missing" and missing.summary == {} and missing.checkpoint_epoch is None
    with pytest.raises(StoreError, match="no final.safetensors"):
        missing.weights("final")
    with pytest.raises(StoreError, match="metrics.csv"):
        missing.metrics  # noqa: B018
    run = _train(store)
    assert run.path == tmp_path.resolve() / CFG.run_id and run.config == CFG
    assert run.snapshot_epochs == [0, 2, 3]
    assert run.weights(0).keys() == run.weights(2).keys() == run.weights(3).keys()
    assert np.array_equal(run.weights(3)["out.weight"], run.weights("final")["out.weight"])
    with pytest.raises(StoreError, match=r"stored epochs \[0, 2, 3\]"):
        run.weights(1)
    cfg_json = json.loads((run.path / "config.json").read_text())
    assert RunConfig.from_dict(cfg_json) == CFG and cfg_json["run_id"] == CFG.run_id
    assert cfg_json["device_used"] == "cpu" and "torch" in cfg_json["versions"]
    assert json.loads((run.path / "DONE").read_text())["files"]["metrics.csv"]["size"] > 0


def test_list_skips_foreign_folders_and_sorts(tmp_path, monkeypatch):
    for w in (12, 8):
        _train(tmp_path, CFG.replace(width=w))
    (tmp_path / "notes").mkdir()
    (tmp_path / "0123456789abcdef").mkdir()
    (tmp_path / "fedcba9876543210").mkdir()
    (tmp_path / "fedcba9876543210" / "config.json").write_text(json.dumps(CFG.to_dict()))  # wrong folder name
    runs = RunStore(tmp_path).list()
    assert [r.config.width for r in runs] == [8, 12] and all(r.status == "done" for r in runs)
    monkeypatch.setenv("WDEV_RUNS", str(tmp_path))
    assert RunStore().path == tmp_path.resolve()
    monkeypatch.delenv("WDEV_RUNS")
    monkeypatch.chdir(tmp_path)
    assert RunStore().path == (tmp_path / "runs").resolve()


def test_finished_run_metrics_are_read_once_and_copies_handed_out(tmp_path, monkeypatch):
    from wdev_utils import store as store_mod
    from wdev_utils.config import RunConfig
    from wdev_utils.train import get_runs

    cfg = RunConfig(dataset="mnist-5k", width=8, epochs=2, device="cpu")
    run = get_runs([cfg], tmp_path, progress=False)[0]
    first = run.metrics
    reads = []
    monkeypatch.setattr(store_mod, "read_metrics", lambda p: reads.append(p))
    second = run.metrics
    assert reads == [] and second.equals(first)
    second.loc[0, "train_loss"] = -1.0
    assert run.metrics.loc[0, "train_loss"] == first.loc[0, "train_loss"], "callers cannot change the cache"

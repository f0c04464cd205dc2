"""The training engine and get_runs: determinism, resume, ensembles, divergence, locking, probes, masks."""
import os
import signal
import subprocess
import sys
import textwrap
import time
import types

import numpy as np
import pytest
import torch

from wdev_utils.config import RunConfig
from wdev_utils.ensemble import Ensemble, TensorData
from wdev_utils.errors import StoreError
from wdev_utils.model import PARAM_NAMES, init_params, letter_mask
from wdev_utils.probes import METRIC_COLUMNS
from wdev_utils.store import RunStore
from wdev_utils.train import get_runs, shuffle_generator, train_runs

BASE = RunConfig(dataset="mnist-5k", width=16, epochs=6, batch_size=64, device="cpu")


def synthetic(n=300, n_test=100, d=12, c=3, seed=0):
    """A small learnable classification problem shaped like a loaded Dataset."""
    rng = np.random.default_rng(seed)
    w = rng.normal(size=(d, c))
    x = rng.random((n + n_test, d)).astype(np.float32)
    y = (x @ w).argmax(1).astype(np.int64)
    return types.SimpleNamespace(name="synthetic", x_train=x[:n], y_train=y[:n], x_test=x[n:], y_test=y[n:],
                                 n_classes=c, input_dim=d, source="test")


DS = synthetic()


def _train(cfgs, path, **kw):
    return train_runs(cfgs, path, dataset=DS, progress=False, **kw)


def _same_weights(a, b, exact=True, atol=1e-5):
    wa, wb = a.weights("final"), b.weights("final")
    assert set(wa) == set(PARAM_NAMES) == set(wb)
    for k in wa:
        if exact:
            assert np.array_equal(wa[k], wb[k], equal_nan=True), k
        else:
            np.testing.assert_allclose(wa[k], wb[k], atol=atol, err_msg=k)


def _no_seconds(df):
    return df.drop(columns="seconds")


def _np_eval(p, x, y):
    h = np.maximum(x @ p["fc1.weight"].T.astype(np.float64) + p["fc1.bias"], 0)
    h = np.maximum(h @ p["fc2.weight"].T + p["fc2.bias"], 0)
    z = h @ p["out.weight"].T + p["out.bias"]
    e = np.exp(z - z.max(1, keepdims=True))
    prob = e / e.sum(1, keepdims=True)
    py = prob[np.arange(len(y)), y]
    return -np.log(np.clip(py, 1e-7, 1 - 1e-7)).mean(), (z.argmax(1) == y).mean()


def test_run_writes_every_file_and_its_metrics_are_right(tmp_path):
    cfg = BASE.replace(snapshot_epochs=(2, 4))
    (run,) = _train([cfg], tmp_path)
    assert run.status == "done" and run.is_done
    names = sorted(p.relative_to(run.path).as_posix() for p in run.path.rglob("*") if p.is_file())
    assert names == ["DONE", "config.json", "final.safetensors", "init.safetensors", "metrics.csv",
                     "snapshots/epoch-00002.safetensors", "snapshots/epoch-00004.safetensors", "summary.json"]
    m = run.metrics
    assert list(m.columns) == list(METRIC_COLUMNS) and list(m.epoch) == list(range(7))
    init, final = run.weights("init"), run.weights("final")
    # epoch 0 and final test metrics against a numpy evaluation of the stored weights
    loss0, acc0 = _np_eval(init, DS.x_train, DS.y_train)
    assert m.train_loss[0] == pytest.approx(loss0, rel=1e-5) and m.train_acc[0] == pytest.approx(acc0)
    loss_t, acc_t = _np_eval(final, DS.x_test, DS.y_test)
    assert m.test_loss.iloc[-1] == pytest.approx(loss_t, rel=1e-5) and m.test_acc.iloc[-1] == pytest.approx(acc_t)
    assert m.train_loss.iloc[-1] < m.train_loss[0]
    # probes against numpy on the stored weights
    for layer in ("fc1", "fc2", "out"):
        w, w0 = final[f"{layer}.weight"].astype(np.float64), init[f"{layer}.weight"].astype(np.float64)
        d = w - w0
        last = m.iloc[-1]
        assert last[f"{layer}_mean_abs_dev"] == pytest.approx(np.abs(d).mean(), rel=1e-5)
        assert last[f"{layer}_rms_dev"] == pytest.approx(np.sqrt((d ** 2).mean()), rel=1e-5)
        assert last[f"{layer}_max_abs_dev"] == pytest.approx(np.abs(d).max(), rel=1e-5)
        assert last[f"{layer}_rel_dist"] == pytest.approx(np.linalg.norm(d) / np.linalg.norm(w0), rel=1e-5)
        assert last[f"{layer}_corr"] == pytest.approx(np.corrcoef(w.ravel(), w0.ravel())[0, 1], rel=1e-6)
        assert m[f"{layer}_mean_abs_dev"][0] == 0 and m[f"{layer}_corr"][0] == pytest.approx(1)
    snap = run.weights(4)
    assert run.snapshot_epochs == [0, 2, 4, 6]
    assert m.fc2_mean_abs_dev[4] == pytest.approx(np.abs(snap["fc2.weight"] - init["fc2.weight"]).mean(), rel=1e-5)
    s = run.summary
    assert s["status"] == "done" and s["divergence_epoch"] is None
    assert s["final_train_loss"] == pytest.approx(m.train_loss.iloc[-1])
    assert s["min_train_loss"] == pytest.approx(m.train_loss.min())
    assert s["device"] == "cpu" and s["seconds"] > 0


def test_training_matches_an_autograd_loop_with_seeded_shuffles_and_partial_batches(tmp_path):
    cfg = BASE.replace(epochs=3, batch_size=70, seed=3)  # 300 = 4 x 70 + 20: the last batch is partial
    (run,) = _train([cfg], tmp_path)
    p = init_params(cfg.seed, DS.input_dim, cfg.width, DS.n_classes)
    for v in p.values():
        v.requires_grad_()
    opt = torch.optim.SGD(p.values(), lr=cfg.lr)
    gen = shuffle_generator(cfg.seed)
    x, y = torch.tensor(DS.x_train), torch.tensor(DS.y_train)
    losses = []
    for _ in range(cfg.epochs):
        perm, total = torch.randperm(len(x), generator=gen), 0.0
        for s in range(0, len(x), cfg.batch_size):
            idx = perm[s:s + cfg.batch_size]
            h = torch.relu(x[idx] @ p["fc1.weight"].T + p["fc1.bias"])
            h = torch.relu(h @ p["fc2.weight"].T + p["fc2.bias"])
            z = h @ p["out.weight"].T + p["out.bias"]
            loss = -torch.softmax(z, 1).clamp(1e-7, 1 - 1e-7).log().gather(1, y[idx, None]).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        losses.append(total / len(x))
    final = run.weights("final")
    for k in PARAM_NAMES:
        np.testing.assert_allclose(final[k], p[k].detach().numpy(), atol=2e-5, err_msg=k)
    np.testing.assert_allclose(run.metrics.train_loss[1:], losses, rtol=1e-5)


def test_same_config_and_seed_give_identical_runs(tmp_path):
    (a,) = _train([BASE], tmp_path / "a")
    (b,) = _train([BASE], tmp_path / "b")
    _same_weights(a, b)
    assert _no_seconds(a.metrics).equals(_no_seconds(b.metrics))
    (c,) = _train([BASE.replace(seed=1)], tmp_path / "a")
    assert not np.array_equal(a.weights("final")["fc1.weight"], c.weights("final")["fc1.weight"])


class Crash(Exception):
    pass


def _crash_at(epoch):
    def hook(e):
        if e == epoch:
            raise Crash(e)
    return hook


def test_resume_after_a_crash_gives_the_same_final_weights(tmp_path):
    cfg = BASE.replace(epochs=10, snapshot_epochs=(4, 8))
    (ref,) = _train([cfg], tmp_path / "ref")
    store = RunStore(tmp_path / "crash")
    with pytest.raises(Crash):
        _train([cfg], store, checkpoint_every=3, on_epoch=_crash_at(8))
    run = store.run(cfg)
    assert run.status == "incomplete" and run.checkpoint_epoch == 6
    epochs_run = []
    (done,) = _train([cfg], store, checkpoint_every=3, on_epoch=epochs_run.append)
    assert epochs_run == [7, 8, 9, 10], "training should resume after the epoch-6 checkpoint"
    assert done.status == "done" and not (done.path / "checkpoint").exists()
    _same_weights(ref, done)
    assert np.array_equal(ref.weights(8)["fc2.weight"], done.weights(8)["fc2.weight"])
    assert _no_seconds(ref.metrics).equals(_no_seconds(done.metrics))


def test_resume_with_momentum_restores_the_buffers(tmp_path):
    cfg = BASE.replace(epochs=5, momentum=0.9)
    (ref,) = _train([cfg], tmp_path / "ref")
    with pytest.raises(Crash):
        _train([cfg], tmp_path / "b", checkpoint_every=2, on_epoch=_crash_at(3))
    (done,) = _train([cfg], tmp_path / "b", checkpoint_every=2)
    _same_weights(ref, done)


def test_corrupt_checkpoint_means_a_fresh_start_with_the_same_result(tmp_path):
    cfg = BASE.replace(epochs=5)
    (ref,) = _train([cfg], tmp_path / "ref")
    store = RunStore(tmp_path / "b")
    with pytest.raises(Crash):
        _train([cfg], store, checkpoint_every=2, on_epoch=_crash_at(3))
    state = next((store.run(cfg).path / "checkpoint").glob("state-*.safetensors"))
    state.write_bytes(state.read_bytes()[:-10])
    epochs_run = []
    (done,) = _train([cfg], store, checkpoint_every=2, on_epoch=epochs_run.append)
    assert epochs_run == [1, 2, 3, 4, 5]
    _same_weights(ref, done)


def test_ensemble_members_equal_single_runs(tmp_path):
    cfgs = [BASE.replace(seed=s, snapshot_epochs=(3,)) for s in range(4)]
    runs = _train(cfgs, tmp_path / "ens")
    assert [r.config.seed for r in runs] == [0, 1, 2, 3]
    assert {r.summary["ensemble_members"] for r in runs} == {4}
    assert len({r.run_id for r in runs}) == 4
    for seed in (0, 2):
        (single,) = _train([cfgs[seed]], tmp_path / f"single{seed}")
        assert single.summary["ensemble_members"] == 1
        _same_weights(runs[seed], single, exact=False, atol=1e-5)
        np.testing.assert_allclose(_no_seconds(runs[seed].metrics), _no_seconds(single.metrics), rtol=1e-4, atol=1e-6)


def test_a_member_trains_bit_identically_in_ensembles_of_any_size_from_two(tmp_path):
    # what lets a sweep split ensembles to keep its workers busy without changing any run's weights
    cfgs = [BASE.replace(seed=s) for s in range(5)]
    pair = _train(cfgs[:2], tmp_path / "pair")
    five = _train(cfgs, tmp_path / "five")
    assert pair[1].summary["ensemble_members"] == 2 and five[1].summary["ensemble_members"] == 5
    for a, b in zip(pair, five[:2]):
        _same_weights(a, b, exact=True)
        np.testing.assert_array_equal(_no_seconds(a.metrics).to_numpy(), _no_seconds(b.metrics).to_numpy())


def test_a_member_gone_nan_leaves_the_others_bit_identical():
    data = TensorData.from_dataset(DS)
    members = [init_params(s, DS.input_dim, 16, DS.n_classes) for s in range(3)]

    def ensemble(poison):
        params = [{k: v.clone() for k, v in m.items()} for m in members]
        if poison:
            params[1]["fc2.weight"][3, 3] = float("inf")
        return Ensemble(params, members, [shuffle_generator(s) for s in range(3)], data, lr=0.1, batch_size=64,
                        loss="keras")

    clean, poisoned = ensemble(False), ensemble(True)
    for _ in range(2):
        rows_c, rows_p = clean.run_epoch(), poisoned.run_epoch()
    assert not np.isfinite(rows_p[1, 0])
    for k in (0, 2):
        np.testing.assert_array_equal(np.delete(rows_c[k], 4), np.delete(rows_p[k], 4))  # column 4: seconds
        for name in PARAM_NAMES:
            assert torch.equal(clean.params[name][k], poisoned.params[name][k])


def test_divergence_is_recorded_with_all_files(tmp_path):
    cfgs = [BASE.replace(lr=50.0, seed=s, snapshot_epochs=(2,)) for s in (0, 1)]
    runs = _train(cfgs, tmp_path)
    for run in runs:
        assert run.status == "diverged" and run.is_done
        s = run.summary
        assert s["status"] == "diverged" and isinstance(s["divergence_epoch"], int) and 1 <= s["divergence_epoch"] <= 6
        m = run.metrics
        assert list(m.epoch) == list(range(7))
        first = m.train_loss[s["divergence_epoch"]]
        assert not np.isfinite(first) or first > 2 * m.train_loss[0]
        assert {"init.safetensors", "final.safetensors", "metrics.csv", "DONE"} <= {p.name for p in run.path.iterdir()}
        run.weights(2)


def test_letter_mask_is_set_at_init_only(tmp_path):
    cfg = BASE.replace(width=24, mask="a", epochs=3)
    (run,) = _train([cfg], tmp_path)
    mask = letter_mask("a", 24)
    w0, w1 = run.weights("init")["fc2.weight"], run.weights("final")["fc2.weight"]
    assert (w0[~mask] == 0).all() and (w0[mask] != 0).all()
    assert (w1[~mask] != 0).mean() > 0.5, "masked weights must be free to move after initialisation"


def test_get_runs_order_reuse_and_missing(tmp_path):
    store = RunStore(tmp_path)
    cfgs = [BASE.replace(seed=2), BASE.replace(seed=0), BASE.replace(seed=2)]
    with pytest.raises(StoreError, match=f"2 run\\(s\\) missing.*{cfgs[0].run_id}"):
        get_runs(cfgs, store, train_missing=False)
    runs = _train(cfgs, store)
    assert [r.config.seed for r in runs] == [2, 0, 2] and all(r.is_done for r in runs)
    stamp = (runs[0].path / "DONE").stat().st_mtime_ns
    again = get_runs(cfgs, str(tmp_path), train_missing=False)
    assert [r.run_id for r in again] == [r.run_id for r in runs]
    get_runs(cfgs, store, progress=False)  # everything is there: nothing retrained
    assert (runs[0].path / "DONE").stat().st_mtime_ns == stamp


def test_end_to_end_on_mnist_5k(tmp_path):
    cfg = RunConfig(dataset="mnist-5k", width=16, epochs=2, device="cpu")
    (run,) = get_runs([cfg], RunStore(tmp_path), progress=False)
    assert run.status == "done"
    assert run.weights("init")["fc1.weight"].shape == (16, 784)
    assert run.metrics.test_acc.iloc[-1] > 0.5


LOCK_SCRIPT = textwrap.dedent("""
    import os, sys, time
    sys.path.insert(0, {tests!r})
    from test_train import BASE, synthetic
    from wdev_utils.train import train_runs
    epochs = []
    cfg = BASE.replace(epochs=30, width=64)
    ds = synthetic()
    train_runs([cfg.replace(epochs=1, seed=99)], sys.argv[1] + "-warm", dataset=ds, progress=False)
    open(sys.argv[2] + ".ready", "w").close()
    while not os.path.exists(sys.argv[2]):
        time.sleep(0.005)
    t = time.time()
    train_runs([cfg], sys.argv[1], dataset=ds, progress=False, on_epoch=lambda e: (epochs.append(e), time.sleep(0.03)))
    print(len(epochs), time.time() - t)
""")


def test_two_processes_on_one_config_train_it_once(tmp_path):
    script = LOCK_SCRIPT.format(tests=os.path.dirname(__file__))
    store, go1, go2 = tmp_path / "runs", tmp_path / "go1", tmp_path / "go2"
    procs = [subprocess.Popen([sys.executable, "-c", script, str(store), str(go)], stdout=subprocess.PIPE, text=True)
             for go in (go1, go2)]
    deadline = time.time() + 60
    while not all(p.with_name(p.name + ".ready").exists() for p in (go1, go2)) and time.time() < deadline:
        time.sleep(0.01)
    go1.touch()
    cfg = BASE.replace(epochs=30, width=64)
    while not (store / cfg.run_id / "init.safetensors").exists() and time.time() < deadline:
        time.sleep(0.005)
    go2.touch()  # the second starts while the first trains
    (n1, t1), (n2, t2) = [tuple(map(float, p.communicate(timeout=120)[0].split())) for p in procs]
    assert procs[0].returncode == procs[1].returncode == 0
    assert (n1, n2) == (30, 0), "the second process must wait and reuse, not retrain"
    assert t2 > 0.3, "the second process should have waited for the first"
    assert RunStore(store).run(cfg).status == "done"


KILL_SCRIPT = textwrap.dedent("""
    import os, signal, sys
    sys.path.insert(0, {tests!r})
    from test_train import BASE, synthetic
    from wdev_utils.train import train_runs

    def kill_at(epoch):
        if epoch == 25:  # after the checkpoint of epoch 20, mid-way to the next one
            os.kill(os.getpid(), signal.SIGKILL)

    train_runs([BASE.replace(epochs=120, width=64)], sys.argv[1], dataset=synthetic(), progress=False,
               checkpoint_every=10, on_epoch=kill_at)
""")


def test_resume_after_kill_gives_the_same_final_weights(tmp_path):
    cfg = BASE.replace(epochs=120, width=64)
    proc = subprocess.run([sys.executable, "-c", KILL_SCRIPT.format(tests=os.path.dirname(__file__)),
                           str(tmp_path / "b")], timeout=300)
    assert proc.returncode == -signal.SIGKILL, "the training process should have been killed"
    run = RunStore(tmp_path / "b").run(cfg)
    assert run.status == "incomplete" and run.checkpoint_epoch == 20
    (done,) = _train([cfg], tmp_path / "b", checkpoint_every=10)
    (ref,) = _train([cfg], tmp_path / "ref")
    _same_weights(ref, done)


def test_8bit_images_are_held_as_bytes_and_train_bit_identically():
    rng = np.random.default_rng(5)
    levels = rng.integers(0, 256, (200, 12))
    ds = types.SimpleNamespace(x_train=levels.astype(np.float32) / np.float32(255), y_train=rng.integers(0, 3, 200),
                               x_test=np.zeros((4, 12), np.float32), y_test=np.zeros(4, np.int64), n_classes=3)
    packed = TensorData.from_dataset(ds)
    assert packed.x_train.dtype == torch.uint8 and np.array_equal(packed.x_train.numpy(), levels)
    plain = TensorData(torch.tensor(ds.x_train), packed.y_train, packed.x_test, packed.y_test, 3)
    not_8bit = TensorData.from_dataset(types.SimpleNamespace(**{**vars(ds), "x_train": ds.x_train + 1e-3}))
    assert not_8bit.x_train.dtype == torch.float32
    results = []
    for data in (packed, plain):
        members = [init_params(s, 12, 8, 3) for s in range(2)]
        ens = Ensemble(members, members, [shuffle_generator(s) for s in range(2)], data, lr=0.5, batch_size=32,
                       loss="keras")
        ens.run_epoch()
        results.append(ens.params)
    for k in PARAM_NAMES:
        assert torch.equal(results[0][k], results[1][k]), k

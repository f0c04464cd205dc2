"""`wdev train`, `wdev runs` and `wdev bench` on the command line."""
import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from wdev_utils import bench
from wdev_utils.cli import main
from wdev_utils.config import RunConfig
from wdev_utils.model import init_params, sgd_step
from wdev_utils.store import RunStore
from wdev_utils.train import train_runs

TRAIN = ["train", "--dataset", "mnist-5k", "--width", "16", "--epochs", "2", "--batch-size", "256",
         "--device", "cpu"]


def test_train_prints_run_folders_and_runs_lists_them(tmp_path, capsys):
    assert main(TRAIN + ["--seeds", "0-1", "--store", str(tmp_path), "--snapshot-epochs", "1"]) == 0
    captured = capsys.readouterr()
    lines = captured.out.strip().splitlines()
    assert len(lines) == 2
    store = RunStore(tmp_path)
    expected = [RunConfig(width=16, epochs=2, batch_size=256, seed=s, snapshot_epochs=(1,), device="cpu")
                for s in (0, 1)]
    for line, cfg in zip(lines, expected):
        path, status, _ = line.split("\t")
        assert path == str(store.run(cfg).path) and status == "done"
        assert (store.run(cfg).path / "DONE").exists()
    assert "mnist-5k w=16 seed 0,1" in captured.err and "train=" in captured.err  # the progress bar

    assert main(["runs", "--store", str(tmp_path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:5] == ["run_id", "status", "dataset", "width", "seed"]
    for cfg in expected:
        row = next(line.split() for line in out if line.startswith(cfg.run_id))
        s = store.run(cfg).summary
        assert row[1:5] == ["done", "mnist-5k", "16", str(cfg.seed)]
        assert f"{s['final_train_loss']:.4g}" in row and f"{s['final_test_acc']:.3f}" in row and "2/2" in row


def test_runs_shows_incomplete_runs_with_their_checkpoint(tmp_path, capsys):
    cfg = RunConfig(width=8, epochs=4, batch_size=256, device="cpu")

    def crash(epoch):
        if epoch == 3:
            raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        train_runs([cfg], tmp_path, progress=False, checkpoint_every=2, on_epoch=crash)
    assert main(["runs", "--store", str(tmp_path), "--status", "incomplete"]) == 0
    row = capsys.readouterr().out.splitlines()[1].split()
    assert row[:2] == [cfg.run_id, "incomplete"] and "2/4" in row
    assert main(["runs", "--store", str(tmp_path), "--status", "done"]) == 0
    assert capsys.readouterr().out.strip() == "no runs"


@pytest.mark.parametrize("args,message", [
    (["--width", "0"], "width=0: must be a positive integer"),
    (["--mask", "ab"], "mask='ab'"),
    (["--seeds", "3-1"], "--seeds='3-1'"),
    (["--dataset", "cifar"], "dataset='cifar': unknown data set"),
    (["--lr", "0", "--momentum", "2"], "momentum=2.0"),
])
def test_bad_options_exit_2_with_the_field_named(tmp_path, capsys, args, message):
    assert main(TRAIN + args + ["--store", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err
    assert not any(tmp_path.iterdir()), "nothing may be written for an invalid configuration"


def test_flop_formulas_match_torchs_flop_counter():
    for width in (10, 64):
        p = init_params(0, 784, width, 10)
        x, y = torch.rand(128, 784), torch.randint(0, 10, (128,))
        bufs = {k: torch.zeros_like(v) for k, v in p.items()}
        with FlopCounterMode(display=False) as counter:  # it misses in-place GEMMs: use the momentum path
            sgd_step(p, x, y, 0.1, momentum=0.5, bufs=bufs)
        assert counter.get_total_flops() == bench.executed_flops(width)
        assert bench.conventional_flops(width) == 6 * 128 * (784 * width + width * width + width * 10)


def test_bench_reports_every_width_and_the_naive_loop(capsys, monkeypatch):
    monkeypatch.setattr(bench, "N_TRAIN", 3000)
    monkeypatch.setattr(bench, "N_TEST", 500)
    monkeypatch.setattr(bench, "PEAK_SECONDS", (0.2, 0.2))
    monkeypatch.setattr(bench, "NAIVE_STEPS", (5, 5))
    monkeypatch.setattr(bench, "ENGINE_FLOPS", (1e8, 1e8))
    args = ["bench", "--quick", "--widths", "10,20", "--members", "2", "--naive-width", "20"]
    assert main(args + ["--threads", str(torch.get_num_threads())]) == 0
    out = capsys.readouterr().out
    assert "float32 matmul peak" in out and "naive loop" in out
    rows = [line for line in out.splitlines() if line.strip()[:2] in ("10", "20")]
    peak = float(out.split("float32 matmul peak:")[1].split()[0])
    assert len(rows) == 2
    for line in rows:  # ... | GF/s %peak s/epoch/net speed-up bound | ...
        ens = line.split("|")[2].split()
        speedup, bound = float(ens[-2].rstrip("x")), float(ens[-1].rstrip("x"))
        width, single_gflops = int(line.split("|")[0]), float(line.split("|")[1].split()[0])
        assert np.isfinite(speedup) and speedup > 0
        # the bound is the peak over the single network's executed rate (printed to 0.1 GFLOP/s)
        executed = single_gflops * bench.executed_flops(width) / bench.conventional_flops(width)
        assert bound == pytest.approx(peak / executed, rel=0.05, abs=0.01)

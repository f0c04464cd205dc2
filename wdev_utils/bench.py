"""`wdev bench`: training throughput against the matmul peak, ensembles, a naive loop and the probes' cost.

Everything is measured in one process on synthetic Fashion-MNIST-sized data (60000 x 784 8-bit
images, 10 classes, batch 128), so only ratios measured together are meaningful on a shared machine.
FLOPs per SGD step and network: 6 * B * (D*W + W*W + W*C) (the usual convention: forward 2, backward 4
per weight and sample). The engine skips the input gradient of fc1, so it executes
B * (4*D*W + 6*W*W + 6*W*C); both rates are reported.
"""
from __future__ import annotations

import time
import types

import numpy as np
import torch

N_TRAIN, N_TEST, D, C, BATCH = 60000, 10000, 784, 10, 128
WIDTHS = (10, 50, 100, 300, 500, 1000)
# per measurement, (quick, full): seconds of matmul timing, naive-loop steps, engine FLOPs
PEAK_SECONDS, NAIVE_STEPS, ENGINE_FLOPS = (1.0, 3.0), (60, 300), (6e9, 4e10)


def conventional_flops(width: int, batch: int = BATCH, d: int = D, c: int = C) -> float:
    """FLOPs of one SGD step of one network, 6 * B * (weights) convention."""
    return 6.0 * batch * (d * width + width * width + width * c)


def executed_flops(width: int, batch: int = BATCH, d: int = D, c: int = C) -> float:
    """FLOPs the engine executes per step (no gradient w.r.t. the inputs)."""
    return float(batch) * (4 * d * width + 6 * width * width + 6 * width * c)


def _sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def synthetic_fashion(seed: int = 0):
    """A Dataset-like object shaped like Fashion-MNIST: 8-bit pixels / 255, 10 classes."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (N_TRAIN + N_TEST, D), dtype=np.uint8)
    y = rng.integers(0, C, N_TRAIN + N_TEST)
    xf = x.astype(np.float32) / np.float32(255)
    return types.SimpleNamespace(x_train=xf[:N_TRAIN], y_train=y[:N_TRAIN], x_test=xf[N_TRAIN:],
                                 y_test=y[N_TRAIN:], n_classes=C, input_dim=D, images=x[:N_TRAIN].reshape(-1, 28, 28))


def matmul_peak(device="cpu", seconds: float = 1.0) -> float:
    """Best float32 square-matmul rate (n = 1024 and 2048) in GFLOP/s over `seconds` of timed repeats."""
    best = 0.0
    for n in (1024, 2048):
        a, b = torch.rand(n, n, device=device), torch.rand(n, n, device=device)
        a @ b
        t_end = time.perf_counter() + seconds / 2
        while time.perf_counter() < t_end:
            _sync(device)
            t = time.perf_counter()
            a @ b
            _sync(device)
            best = max(best, 2 * n ** 3 / (time.perf_counter() - t))
    return best / 1e9


def _ensemble(data, width: int, members: int):
    from .ensemble import Ensemble
    from .model import init_params
    from .train import shuffle_generator

    params = [init_params(s, D, width, C) for s in range(members)]
    return Ensemble(params, params, [shuffle_generator(s) for s in range(members)], data, lr=0.01, batch_size=BATCH,
                    loss="keras")


def engine_step_seconds(data, width: int, members: int, steps: int, repeats: int = 3) -> tuple[float, float]:
    """Seconds per SGD step of the engine for one network and for `members` networks batched, best of
    `repeats` whole-epoch loops over `steps` batches, the two measured alternately (after a warm-up)."""
    from .ensemble import TensorData

    sub = TensorData(data.x_train[:steps * BATCH], data.y_train[:steps * BATCH], data.x_test, data.y_test, C)
    steps = -(-sub.x_train.shape[0] // BATCH)
    dev = data.x_train.device
    best = [np.inf, np.inf]
    for i, ens in enumerate([_ensemble(sub, width, 1), _ensemble(sub, width, members)] * (repeats + 1)):
        _sync(dev)
        t = time.perf_counter()
        ens.train_epoch()
        _sync(dev)
        if i >= 2:
            best[i % 2] = min(best[i % 2], (time.perf_counter() - t) / steps)
    return best[0], best[1]


def probe_seconds(data, width: int, repeats: int = 5) -> tuple[float, float]:
    """Seconds of the per-epoch deviation probes and of the test-set evaluation for one network."""
    from .ensemble import evaluate
    from .probes import layer_probes

    ens = _ensemble(data, width, 1)
    times_p, times_e = [], []
    for _ in range(repeats):
        t = time.perf_counter()
        layer_probes(ens.params, ens.probe_refs).cpu()
        times_p.append(time.perf_counter() - t)
        t = time.perf_counter()
        evaluate(ens.params, data.x_test, data.y_test, "keras")[0].cpu()
        times_e.append(time.perf_counter() - t)
    return float(np.median(times_p)), float(np.median(times_e))


def naive_step_seconds(ds, width: int, steps: int, device="cpu") -> float:
    """Seconds per step of the loop a user writes: torchvision-style dataset (PIL + ToTensor), DataLoader, nn.Module."""
    from PIL import Image
    from torch.utils.data import DataLoader, Dataset
    from torchvision.transforms import ToTensor

    class ImageDataset(Dataset):
        def __init__(self, images, targets):
            self.images, self.targets, self.transform = images, targets, ToTensor()

        def __len__(self):
            return len(self.images)

        def __getitem__(self, i):
            return self.transform(Image.fromarray(self.images[i])), int(self.targets[i])

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(D, width), torch.nn.ReLU(),
                              torch.nn.Linear(width, width), torch.nn.ReLU(), torch.nn.Linear(width, C)).to(device)
    opt = torch.optim.SGD(net.parameters(), lr=0.01)
    loader = DataLoader(ImageDataset(ds.images, ds.y_train), batch_size=BATCH, shuffle=True)
    it = iter(loader)
    times = []
    for i in range(steps + 3):
        t = time.perf_counter()
        try:
            x, y = next(it)
        except StopIteration:  # a new epoch
            it = iter(loader)
            x, y = next(it)
        x, y = x.to(device), y.to(device)
        loss = torch.nn.functional.cross_entropy(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        _sync(device)
        if i >= 3:
            times.append(time.perf_counter() - t)
    return float(np.median(times))  # robust to other load on a shared machine, like the engine's best-of


def run_benchmark(quick: bool = False, widths=WIDTHS, members: int = 8, device: str = "cpu",
                  naive_width: int = 100, progress=print) -> dict:
    """Measure everything; returns a dict of results (see format_benchmark)."""
    from .ensemble import TensorData

    ds = synthetic_fashion()
    data = TensorData.from_dataset(ds, device)
    out = {"device": str(device), "threads": torch.get_num_threads(), "torch": torch.__version__, "quick": quick,
           "members": members, "rows": []}
    progress(f"matmul peak on {device} with {out['threads']} thread(s) ...")
    mode = 0 if quick else 1
    peaks = [matmul_peak(device, seconds=PEAK_SECONDS[mode])]
    steps_per_epoch = -(-N_TRAIN // BATCH)
    for w in widths:
        # fewer steps at large widths: aim at a fixed amount of work per measurement
        steps = int(np.clip(ENGINE_FLOPS[mode] / (members * conventional_flops(w)), 8, 469))
        progress(f"width {w}: {steps} steps per measurement ...")
        single, ens = engine_step_seconds(data, w, members, steps)
        t_probe, t_eval = probe_seconds(data, w)
        out["rows"].append({
            "width": w, "single_s_step": single, "ens_s_step": ens,
            "single_gflops": conventional_flops(w) / single / 1e9,
            "single_exec_gflops": executed_flops(w) / single / 1e9,
            "ens_gflops": members * conventional_flops(w) / ens / 1e9,
            "ens_exec_gflops": members * executed_flops(w) / ens / 1e9,
            "ens_speedup": members * single / ens,
            "single_s_epoch": single * steps_per_epoch, "ens_s_epoch_per_net": ens * steps_per_epoch / members,
            "probe_pct": 100 * t_probe / (single * steps_per_epoch),
            "eval_pct": 100 * t_eval / (single * steps_per_epoch),
        })
    peaks.append(matmul_peak(device, seconds=PEAK_SECONDS[mode]))
    out["peak_gflops"] = max(peaks)
    progress(f"naive loop at width {naive_width} ...")
    naive = naive_step_seconds(ds, naive_width, steps=NAIVE_STEPS[mode], device=device)
    ours = next((r for r in out["rows"] if r["width"] == naive_width), None)
    if ours is None:
        ours = {"single_s_step": engine_step_seconds(data, naive_width, members, 40)[0]}
    out["naive"] = {"width": naive_width, "s_step": naive, "s_epoch": naive * steps_per_epoch,
                    "speedup": naive / ours["single_s_step"]}
    return out


def speedup_bound(row: dict, peak_gflops: float) -> float:
    """The largest ensemble speed-up per network the matmul peak allows: peak / the single network's executed rate."""
    return peak_gflops / row["single_exec_gflops"]


def format_benchmark(res: dict) -> str:
    """The benchmark as a plain-text report."""
    peak = res["peak_gflops"]
    lines = [f"device {res['device']}, {res['threads']} thread(s), torch {res['torch']}, "
             f"{'quick' if res['quick'] else 'full'} run; data 60000 x 784, 10 classes, batch {BATCH}",
             f"float32 matmul peak: {peak:.1f} GFLOP/s",
             "GFLOP/s by the 6*B*(DW+W^2+WC) convention; % of peak and 'exec' use the FLOPs actually executed;",
             "'peak allows': the ensemble speed-up per network if every ensemble step ran at the matmul peak",
             f"{'width':>5} | {'single GF/s':>11} {'%peak':>6} {'s/epoch':>8} | {res['members']}-seed ens GF/s "
             f"{'%peak':>6} {'s/epoch/net':>11} {'x single':>8} {'peak allows':>11} | {'probes %':>8} "
             f"{'test eval %':>11}"]
    for r in res["rows"]:
        single_pct, ens_pct = 100 * r["single_exec_gflops"] / peak, 100 * r["ens_exec_gflops"] / peak
        lines.append(f"{r['width']:>5} | {r['single_gflops']:>11.1f} {single_pct:>5.0f}% "
                     f"{r['single_s_epoch']:>8.3f} | {r['ens_gflops']:>17.1f} {ens_pct:>5.0f}% "
                     f"{r['ens_s_epoch_per_net']:>11.3f} {r['ens_speedup']:>7.2f}x {speedup_bound(r, peak):>10.2f}x | "
                     f"{r['probe_pct']:>7.2f}% "
                     f"{r['eval_pct']:>10.1f}%")
    n = res["naive"]
    lines.append(f"naive loop (Dataset + ToTensor + DataLoader + nn.Module) at width {n['width']}: "
                 f"{n['s_epoch']:.2f} s/epoch; engine single network is {n['speedup']:.1f}x faster")
    return "\n".join(lines)

"""device='cuda': training on a GPU matches the CPU to float tolerance (skipped without a GPU)."""
import numpy as np
import pytest
import torch

from wdev_utils.config import RunConfig
from wdev_utils.store import RunStore
from wdev_utils.sweep import run_sweep
from wdev_utils.train import get_runs

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU on this machine")


def test_cuda_run_matches_cpu_run(tmp_path):
    cfg = RunConfig(dataset="mnist-5k", width=32, epochs=3, seed=0)
    cpu = get_runs([cfg.replace(device="cpu")], RunStore(tmp_path / "cpu"), progress=False)[0]
    gpu = get_runs([cfg.replace(device="cuda")], RunStore(tmp_path / "gpu"), progress=False)[0]
    assert gpu.summary["device"].startswith("cuda")
    for name, w in cpu.weights("final").items():
        np.testing.assert_allclose(gpu.weights("final")[name], w, rtol=1e-3, atol=1e-4)


def test_sweep_on_cuda(tmp_path):
    configs = [RunConfig(dataset="mnist-5k", width=16, epochs=2, seed=s, device="cuda") for s in (0, 1)]
    result = run_sweep(configs, RunStore(tmp_path), workers=1, progress=False)
    assert not result.failed and sorted(result.trained) == sorted(c.run_id for c in configs)

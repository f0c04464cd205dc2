"""Per-epoch deviation probes of each weight matrix from its initial value, and the metrics.csv columns."""
from __future__ import annotations

import torch

from .model import LAYERS

PROBES = ("mean_abs_dev", "rms_dev", "max_abs_dev", "rel_dist", "corr")
BASE_COLUMNS = ("epoch", "train_loss", "test_loss", "train_acc", "test_acc", "seconds")
PROBE_COLUMNS = tuple(f"{layer}_{p}" for layer in LAYERS for p in PROBES)
METRIC_COLUMNS = BASE_COLUMNS + PROBE_COLUMNS


def deviation_probes(w: torch.Tensor, w0: torch.Tensor) -> torch.Tensor:
    """Probes of w against w0 over the last two axes: (..., 5) = mean|d|, RMS(d), max|d|, ||d||/||w0||, corr(w, w0).

    Sums accumulate in float64; d = w - w0. The correlation is Pearson's over all entries of the matrix.
    """
    dims = (-2, -1)
    n = w.shape[-1] * w.shape[-2]
    d = w - w0
    ad = d.abs()
    sq = d.square().sum(dims, dtype=torch.float64)
    mean_abs = ad.sum(dims, dtype=torch.float64) / n
    rms = (sq / n).sqrt()
    max_abs = ad.amax(dims).double()
    rel = sq.sqrt() / w0.square().sum(dims, dtype=torch.float64).sqrt()
    wc = w.double() - w.mean(dims, keepdim=True, dtype=torch.float64)
    w0c = w0.double() - w0.mean(dims, keepdim=True, dtype=torch.float64)
    corr = (wc * w0c).sum(dims) / (wc.square().sum(dims) * w0c.square().sum(dims)).sqrt()
    return torch.stack([mean_abs, rms, max_abs, rel, corr], dim=-1)


def layer_probes(params: dict[str, torch.Tensor], init: dict[str, torch.Tensor]) -> torch.Tensor:
    """All probe columns (in PROBE_COLUMNS order) for every member: shape (..., 15)."""
    return torch.cat([deviation_probes(params[f"{l}.weight"], init[f"{l}.weight"]) for l in LAYERS], dim=-1)

"""Per-epoch deviation probes of each weight matrix from its initial value, and the metrics.csv columns."""
from __future__ import annotations

import torch

from .model import LAYERS

PROBES = ("mean_abs_dev", "rms_dev", "max_abs_dev", "rel_dist", "corr")
BASE_COLUMNS = ("epoch", "train_loss", "test_loss", "train_acc", "test_acc", "seconds")
PROBE_COLUMNS = tuple(f"{layer}_{p}" for layer in LAYERS for p in PROBES)
METRIC_COLUMNS = BASE_COLUMNS + PROBE_COLUMNS


def probe_reference(w0: torch.Tensor) -> dict[str, torch.Tensor]:
    """What the probes need of initial weights w0 (matrices over the last two axes), computed once per training:
    w0, its Frobenius norm, w0 centred on its mean (float32) and that centred matrix's norm (norms in float64)."""
    dims = (-2, -1)
    w0c = (w0.double() - w0.mean(dims, keepdim=True, dtype=torch.float64)).float()
    return {"w0": w0, "norm": w0.square().sum(dims, dtype=torch.float64).sqrt(), "centred": w0c,
            "centred_norm": w0c.square().sum(dims, dtype=torch.float64).sqrt()}


def deviation_probes(w: torch.Tensor, ref: dict[str, torch.Tensor]) -> torch.Tensor:
    """Probes of w against its initial value (`ref` from probe_reference) over the last two axes: (..., 5) =
    mean|d|, RMS(d), max|d|, ||d||/||w0||, corr(w, w0).

    Sums accumulate in float64; d = w - w0. The correlation is Pearson's over all entries of the matrix.
    """
    dims = (-2, -1)
    n = w.shape[-1] * w.shape[-2]
    d = w - ref["w0"]
    ad = d.abs()
    sq = d.square().sum(dims, dtype=torch.float64)
    mean_abs = ad.sum(dims, dtype=torch.float64) / n
    rms = (sq / n).sqrt()
    max_abs = ad.amax(dims).double()
    rel = sq.sqrt() / ref["norm"]
    wc = w.double() - w.mean(dims, keepdim=True, dtype=torch.float64)
    corr = (wc * ref["centred"]).sum(dims) / (wc.square().sum(dims).sqrt() * ref["centred_norm"])
    return torch.stack([mean_abs, rms, max_abs, rel, corr], dim=-1)


def layer_references(init: dict[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    """probe_reference of every layer's initial weight matrix."""
    return {layer: probe_reference(init[f"{layer}.weight"]) for layer in LAYERS}


def layer_probes(params: dict[str, torch.Tensor], refs: dict[str, dict[str, torch.Tensor]]) -> torch.Tensor:
    """All probe columns (in PROBE_COLUMNS order) for every member: shape (..., 15); refs from layer_references."""
    return torch.cat([deviation_probes(params[f"{layer}.weight"], refs[layer]) for layer in LAYERS], dim=-1)

"""The training engine: K networks of one configuration trained together, each exactly as if alone.

Data sit on the device as whole tensors; each member draws its own permutation per epoch from its own
CPU generator (so CPU and GPU runs see the same order) and gathers its batches by index. With K = 1 the
plain 2-D matmul path runs; with K > 1 the batched one (baddbmm). Members never share a reduction, so a
member whose weights go NaN leaves the others untouched.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
from torch.nn.functional import embedding

from .model import PARAM_NAMES, forward, loss_and_grad, sgd_step
from .probes import layer_probes, layer_references

EVAL_CHUNK = 8192


def _as_uint8_if_exact(x: np.ndarray) -> np.ndarray:
    """x as uint8 levels k when every value is exactly float32(k) / 255 (8-bit images), else x unchanged."""
    out = np.empty(x.shape, dtype=np.uint8)
    for s in range(0, len(x), 8192):
        chunk = x[s:s + 8192]
        q = np.rint(chunk * np.float32(255))
        if not (np.all(q >= 0) and np.all(q <= 255)):
            return x
        out[s:s + 8192] = q
        if not np.array_equal(out[s:s + 8192].astype(np.float32) / np.float32(255), chunk):
            return x
    return out


def decode(x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """Inputs as float32: 8-bit levels k become k / 255 (bit-identical to the float data they came from).

    `out`, a float32 tensor of x's shape, receives the decoded levels (saves an allocation per batch).
    """
    if x.dtype != torch.uint8:
        return x
    return (x.to(torch.float32) if out is None else out.copy_(x)).div_(255.0)


def gather_rows(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """x[idx] for a (B,) or (K, B) index: embedding's row copy is several times faster than indexing on CPU."""
    if x.device.type == "cpu":
        return embedding(idx, x)
    return x.index_select(0, idx.reshape(-1)).view(*idx.shape, x.shape[1])


@dataclass
class TensorData:
    """A data set as device tensors; x_train may be held as exact 8-bit levels (a quarter of the memory traffic)."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    n_classes: int

    @classmethod
    def from_dataset(cls, ds, device: torch.device | str = "cpu") -> "TensorData":
        """Move a Dataset-like object (x_train, y_train, x_test, y_test, n_classes) to `device`."""
        def t(a, dtype=None):
            return torch.as_tensor(np.ascontiguousarray(a), dtype=dtype).to(device)
        x_train = _as_uint8_if_exact(np.asarray(ds.x_train, dtype=np.float32))
        return cls(t(x_train), t(ds.y_train, torch.int64), t(ds.x_test, torch.float32), t(ds.y_test, torch.int64),
                   int(ds.n_classes))

    @property
    def input_dim(self) -> int:
        """Number of input features."""
        return self.x_train.shape[1]


def stack(dicts: list[dict[str, torch.Tensor]], device) -> dict[str, torch.Tensor]:
    """Stack per-member tensors along a new leading axis, on `device`."""
    return {k: torch.stack([d[k] for d in dicts]).to(device).contiguous() for k in dicts[0]}


def unstack(stacked: dict[str, torch.Tensor], k: int) -> dict[str, torch.Tensor]:
    """Member k's tensors, copied to the CPU."""
    return {name: t[k].detach().to("cpu", copy=True).contiguous() for name, t in stacked.items()}


def evaluate(params: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor,
             loss: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean loss and accuracy of every member (stacked params) on the whole of (x, y): two (K,) tensors."""
    k = params["fc1.weight"].shape[0]
    total = torch.zeros(k, dtype=torch.float64, device=x.device)
    correct = torch.zeros(k, dtype=torch.int64, device=x.device)
    with torch.no_grad():
        for s in range(0, x.shape[0], EVAL_CHUNK):
            xc, yc = decode(x[s:s + EVAL_CHUNK]), y[s:s + EVAL_CHUNK]
            z = forward(params, xc)
            correct += (z.argmax(-1) == yc).sum(-1)
            value, _ = loss_and_grad(z, yc.expand(k, -1), loss, need_grad=False)
            total += value.sum(-1, dtype=torch.float64)
    n = max(x.shape[0], 1)
    return total / n, correct.double() / n


class Ensemble:
    """K members of one configuration in training: stacked params, their initial weights' probe references,
    momentum buffers, generators."""

    def __init__(self, params: list[dict], init: list[dict], generators: list[torch.Generator], data: TensorData,
                 *, lr: float, batch_size: int, loss: str, momentum: float = 0.0, bufs: list[dict] | None = None):
        dev = data.x_train.device
        self.k = len(params)
        self.params = stack(params, dev)
        self.probe_refs = layer_references(stack(init, dev))  # the initial side of the per-epoch probes, once
        self.generators = generators
        self.data = data
        self.lr, self.batch_size, self.loss, self.momentum = float(lr), int(batch_size), loss, float(momentum)
        self.bufs = None
        if momentum:
            self.bufs = stack(bufs, dev) if bufs else {n: torch.zeros_like(self.params[n]) for n in PARAM_NAMES}

    def _row(self, train_loss, train_acc, seconds_start) -> np.ndarray:
        test_loss, test_acc = evaluate(self.params, self.data.x_test, self.data.y_test, self.loss)
        probes = layer_probes(self.params, self.probe_refs)
        cols = torch.cat([torch.stack([train_loss, test_loss, train_acc, test_acc], 1), probes], 1).cpu().numpy()
        seconds = np.full((self.k, 1), time.perf_counter() - seconds_start)  # column 6 of METRIC_COLUMNS
        return np.concatenate([cols[:, :4], seconds, cols[:, 4:]], axis=1)

    def evaluate_initial(self) -> np.ndarray:
        """Metrics row for epoch 0 (train loss/accuracy over the whole train set): (K, columns - 1)."""
        t0 = time.perf_counter()
        train_loss, train_acc = evaluate(self.params, self.data.x_train, self.data.y_train, self.loss)
        return self._row(train_loss, train_acc, t0)

    def _permutations(self) -> torch.Tensor:
        n = self.data.x_train.shape[0]
        perms = torch.stack([torch.randperm(n, generator=g) for g in self.generators])
        return perms.to(self.data.x_train.device)

    def train_epoch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """One pass over the shuffled train set; returns each member's (sum of sample losses, number correct)."""
        d = self.data
        n, bs = d.x_train.shape[0], self.batch_size
        perms = self._permutations()
        labels = d.y_train[perms]  # each member's labels in its order for this epoch: (K, n)
        dev = d.x_train.device
        loss_sum = torch.zeros(self.k, dtype=torch.float64, device=dev)
        correct = torch.zeros(self.k, dtype=torch.int64, device=dev)
        members = 0 if self.k == 1 else slice(None)  # one member drops the stacking axis: the plain 2-D path
        params = {k: v[members] for k, v in self.params.items()}
        bufs = self.bufs and {k: v[members] for k, v in self.bufs.items()}
        full_batch = torch.empty((self.k, bs, d.input_dim), device=dev)[members]
        with torch.no_grad():
            for s in range(0, n, bs):
                idx, y = perms[members, s:s + bs], labels[members, s:s + bs]
                x = decode(gather_rows(d.x_train, idx), out=full_batch if s + bs <= n else None)
                value, ok = sgd_step(params, x, y, self.lr, self.loss, self.momentum, bufs)
                loss_sum += value
                correct += ok
        return loss_sum, correct

    def run_epoch(self) -> np.ndarray:
        """Train one epoch, then evaluate; each member's metrics row without the epoch number: (K, columns - 1).

        Train loss and accuracy are the sample-weighted means over the epoch's batches (what Keras reports).
        """
        t0 = time.perf_counter()
        loss_sum, correct = self.train_epoch()
        n = self.data.x_train.shape[0]
        return self._row(loss_sum / n, correct.double() / n, t0)

    def member_state(self, k: int) -> dict[str, torch.Tensor]:
        """Member k's resumable state on the CPU: params, momentum buffers (momentum.*) and RNG state."""
        state = unstack(self.params, k)
        if self.bufs is not None:
            state.update({f"momentum.{n}": t for n, t in unstack(self.bufs, k).items()})
        state["rng.shuffle"] = self.generators[k].get_state()
        return state

    def member_params(self, k: int) -> dict[str, torch.Tensor]:
        """Member k's parameters on the CPU."""
        return unstack(self.params, k)


"""Training runs into the store: grouping seeds into ensembles, locking, checkpoints, resume, summaries.

`get_runs` is what notebooks call; `train_runs` is the same with the knobs tests and the CLI need.
"""
from __future__ import annotations

import hashlib
import sys
from collections.abc import Callable, Iterable

import numpy as np
import torch

from . import __version__
from .config import RunConfig
from .ensemble import Ensemble, TensorData
from .errors import ConfigError, StoreError
from .model import LAYERS, PARAM_NAMES, init_params, param_shapes
from .probes import METRIC_COLUMNS
from .regimes import divergence
from .store import Run, RunStore, load_tensors, snapshot_name

CHECKPOINT_EVERY = 5
MAX_MEMBERS = 16
_COL = {c: i for i, c in enumerate(METRIC_COLUMNS)}


def resolve_device(device: str) -> torch.device:
    """'auto' -> cuda when available, else cpu; 'cuda' without a GPU is a ConfigError."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device='cuda' but torch sees no CUDA GPU; use device='cpu' or 'auto'")
    return torch.device(device)


def shuffle_generator(seed: int) -> torch.Generator:
    """The CPU generator of a run's per-epoch shuffles (independent of the init generator)."""
    derived = int.from_bytes(hashlib.sha256(f"wdev-shuffle-{seed}".encode()).digest()[:8], "little") >> 1
    return torch.Generator(device="cpu").manual_seed(derived)


def divergence_epoch(rows: np.ndarray) -> int | None:
    """Epoch at which the train loss diverged for good (regimes.divergence's rule), or None."""
    loss = rows[:, _COL["train_loss"]]
    weights_ok = np.isfinite(rows[:, [_COL[f"{l}_mean_abs_dev"] for l in LAYERS]]).all(1)
    loss = np.where(weights_ok, loss, np.nan)
    return divergence(rows[:, 0], loss, reference=loss[0])[0]


def summarise(rows: np.ndarray, device: torch.device, members: int) -> dict:
    """summary.json content for a finished run's metrics rows."""
    div = divergence_epoch(rows)
    tl, vl = rows[:, _COL["train_loss"]], rows[:, _COL["test_loss"]]

    def nanmin(a):
        return float(np.nanmin(a)) if np.isfinite(a).any() else None

    return {"status": "diverged" if div is not None else "done", "divergence_epoch": div,
            "final_train_loss": float(tl[-1]), "final_test_loss": float(vl[-1]),
            "final_train_acc": float(rows[-1, _COL["train_acc"]]), "final_test_acc": float(rows[-1, _COL["test_acc"]]),
            "min_train_loss": nanmin(tl), "min_test_loss": nanmin(vl),
            "epoch_min_train_loss": int(np.nanargmin(tl)) if np.isfinite(tl).any() else None,
            "epoch_min_test_loss": int(np.nanargmin(vl)) if np.isfinite(vl).any() else None,
            "epochs": int(rows[-1, 0]), "seconds": float(np.nansum(rows[:, _COL["seconds"]])),
            "device": str(device), "ensemble_members": members, "torch": torch.__version__, "wdev": __version__}


class _Member:
    """One run being trained: its writer, initial weights and where it starts."""

    def __init__(self, store: RunStore, cfg: RunConfig, data: TensorData, device: torch.device):
        self.cfg, self.writer = cfg, store.writer(cfg)
        resumed = self.writer.load_checkpoint()
        shapes = param_shapes(data.input_dim, cfg.width, data.n_classes)
        if resumed is not None and any(tuple(resumed[1][k].shape) != shapes[k] for k in PARAM_NAMES):
            resumed = None  # a checkpoint for other data: start afresh
        if resumed is not None:
            self.epoch, state, self.rows = resumed
            self.params = {k: state[k] for k in PARAM_NAMES}
            self.bufs = {k: state[f"momentum.{k}"] for k in PARAM_NAMES} if cfg.momentum else None
            self.generator = torch.Generator(device="cpu")
            self.generator.set_state(state["rng.shuffle"])
            self.init = load_tensors(self.writer.path / "init.safetensors", backend="torch")
            return
        self.epoch, self.rows, self.bufs = 0, None, None
        self.init = init_params(cfg.seed, data.input_dim, cfg.width, data.n_classes, cfg.init, cfg.mask)
        self.params = {k: v.clone() for k, v in self.init.items()}
        self.generator = shuffle_generator(cfg.seed)
        self.writer.start({"versions": {"wdev": __version__, "torch": torch.__version__, "numpy": np.__version__},
                           "device_used": str(device)})
        self.writer.weights("init.safetensors", self.init, 0)


def _train_members(store: RunStore, cfgs: list[RunConfig], data: TensorData, device: torch.device, *,
                   checkpoint_every: int, progress: bool, on_epoch: Callable | None) -> None:
    """Train (or resume) runs of one configuration differing only by seed; callers hold their locks."""
    members = [_Member(store, c, data, device) for c in cfgs]
    by_start: dict[int, list[_Member]] = {}
    for m in members:
        by_start.setdefault(m.epoch, []).append(m)
    for start, group in sorted(by_start.items()):
        _train_group(group, start, data, device, checkpoint_every=checkpoint_every, progress=progress,
                     on_epoch=on_epoch)


def _train_group(group: list[_Member], start: int, data: TensorData, device: torch.device, *,
                 checkpoint_every: int, progress: bool, on_epoch: Callable | None) -> None:
    from tqdm import tqdm  # plain text: executed notebooks keep a readable log, no widgets

    cfg = group[0].cfg
    ens = Ensemble([m.params for m in group], [m.init for m in group], [m.generator for m in group], data,
                   lr=cfg.lr, batch_size=cfg.batch_size, loss=cfg.loss, momentum=cfg.momentum,
                   bufs=[m.bufs for m in group] if cfg.momentum and start else None)
    rows = np.full((len(group), cfg.epochs + 1, len(METRIC_COLUMNS)), np.nan)
    rows[:, :, 0] = np.arange(cfg.epochs + 1)
    if start == 0:
        rows[:, 0, 1:] = ens.evaluate_initial()
    else:
        for k, m in enumerate(group):
            rows[k, :start + 1] = m.rows
    seeds = ",".join(str(m.cfg.seed) for m in group)
    bar = tqdm(total=cfg.epochs, initial=start, desc=f"{cfg.dataset} w={cfg.width} seed {seeds}",
               disable=not progress, file=sys.stderr, leave=False, dynamic_ncols=True)
    try:
        for epoch in range(start + 1, cfg.epochs + 1):
            rows[:, epoch, 1:] = ens.run_epoch()
            if epoch in cfg.snapshot_epochs:
                for k, m in enumerate(group):
                    m.writer.weights(snapshot_name(epoch), ens.member_params(k), epoch)
            if epoch % checkpoint_every == 0 and epoch < cfg.epochs:
                for k, m in enumerate(group):
                    m.writer.checkpoint(epoch, ens.member_state(k), rows[k, :epoch + 1])
            bar.update(1)
            bar.set_postfix(train=_median(rows[:, epoch, 1]), test=_median(rows[:, epoch, 2]))
            if on_epoch is not None:
                on_epoch(epoch)
    finally:
        bar.close()
    for k, m in enumerate(group):
        m.writer.finish(ens.member_params(k), rows[k], summarise(rows[k], device, len(group)))


def _median(values: np.ndarray) -> str:
    finite = values[np.isfinite(values)]
    return f"{np.median(finite):.4g}" if len(finite) else "nan"


def _unique(configs: Iterable[RunConfig]) -> list[RunConfig]:
    seen, out = set(), []
    for c in configs:
        if not isinstance(c, RunConfig):
            raise ConfigError(f"expected RunConfig objects, got {type(c).__name__}")
        if c.run_id not in seen:
            seen.add(c.run_id)
            out.append(c)
    return out


def _locked_train(store: RunStore, cfgs: list[RunConfig], load_data: Callable, device: torch.device,
                  **kw) -> None:
    """Train what is missing among cfgs; runs another process holds are waited for, then reused."""
    pending = [c for c in cfgs if not store.run(c).is_done]
    while pending:
        held, todo = [], []
        try:
            for c in pending:
                lock = store.lock(c)
                try:
                    lock.acquire(timeout=0)
                except TimeoutError:
                    continue
                held.append(lock)
                if not store.run(c).is_done:  # it may have been finished while we looked
                    todo.append(c)
            if todo:
                _train_members(store, todo, load_data(todo[0]), device, **kw)
        finally:
            for lock in held:
                lock.release()
        pending = [c for c in pending if not store.run(c).is_done]
        if pending and not held:
            with store.lock(pending[0]):  # another process trains it: wait until it lets go
                pass


def _split_evenly(items: list, size: int) -> list[list]:
    """items in consecutive parts of at most `size`, their lengths differing by at most one."""
    n_parts = -(-len(items) // size)
    base, extra = divmod(len(items), n_parts)
    bounds = np.cumsum([0] + [base + (i < extra) for i in range(n_parts)])
    return [items[a:b] for a, b in zip(bounds[:-1], bounds[1:])]


def ensemble_groups(configs: Iterable[RunConfig], max_members: int = MAX_MEMBERS,
                    min_groups: int = 1) -> list[list[RunConfig]]:
    """Runs that differ only by seed, in ensembles of at most `max_members`, by data set and width.

    Ensembles are split evenly and made smaller until there are at least `min_groups` of them (so every
    worker of a sweep gets one), but never below two members: members of any ensemble of two or more
    train bit for bit alike, while a lone network takes the 2-D path (equal only to float tolerance).
    """
    if not isinstance(max_members, int) or max_members < 1:
        raise ConfigError(f"max_members={max_members!r}: must be a positive integer")
    groups: dict[tuple, list[RunConfig]] = {}
    for c in _unique(configs):
        groups.setdefault((c.group_key, c.device), []).append(c)
    ordered = sorted(groups.values(), key=lambda g: (g[0].dataset, g[0].width))
    size = max_members
    while True:
        out = [part for g in ordered for part in _split_evenly(g, size)]
        if len(out) >= min_groups or size <= 2:
            return out
        size -= 1


def train_runs(configs: Iterable[RunConfig], store: RunStore | str | None = None, *, dataset=None,
               data_root=None, progress: bool = True, checkpoint_every: int = CHECKPOINT_EVERY,
               max_members: int = MAX_MEMBERS, on_epoch: Callable | None = None) -> list[Run]:
    """Train every config the store lacks (seeds of one configuration as one ensemble); Runs in input order.

    `dataset`: a loaded Dataset-like object to use instead of load_dataset(cfg.dataset) (for tests).
    `on_epoch(epoch)` is called after each epoch's files are written.
    """
    store = store if isinstance(store, RunStore) else RunStore(store)
    configs = list(configs)
    if not isinstance(checkpoint_every, int) or checkpoint_every < 1:
        raise ConfigError(f"checkpoint_every={checkpoint_every!r}: must be a positive integer")
    groups = ensemble_groups([c for c in configs if not store.run(c).is_done], max_members)
    cache: dict = {}

    def load_data(cfg: RunConfig) -> TensorData:
        key = (cfg.dataset, cfg.fold, cfg.device)
        if key not in cache:
            cache.clear()  # keep one data set on the device at a time
            ds = dataset
            if ds is None:
                from .data import load_dataset
                ds = load_dataset(cfg.dataset, root=data_root, fold=cfg.fold)
            cache[key] = TensorData.from_dataset(ds, resolve_device(cfg.device))
        return cache[key]

    for cfgs in groups:
        _locked_train(store, cfgs, load_data, resolve_device(cfgs[0].device), checkpoint_every=checkpoint_every,
                      progress=progress, on_epoch=on_epoch)
    return [store.run(c).refresh() for c in configs]


def get_runs(configs: Iterable[RunConfig], store: RunStore | str | None = None, train_missing: bool = True,
             progress: bool = True) -> list[Run]:
    """Runs for configs in input order, training the missing ones (or StoreError naming them)."""
    store = store if isinstance(store, RunStore) else RunStore(store)
    configs = list(configs)
    if not train_missing:
        missing = [c for c in _unique(configs) if not store.run(c).is_done]
        if missing:
            names = "; ".join(f"{c.run_id} ({c.short()})" for c in missing[:10])
            more = f" and {len(missing) - 10} more" if len(missing) > 10 else ""
            raise StoreError(f"{len(missing)} run(s) missing from {store.path}: {names}{more}; "
                             f"train them with get_runs(..., train_missing=True) or `wdev sweep`")
        return [store.run(c) for c in configs]
    return train_runs(configs, store, progress=progress)

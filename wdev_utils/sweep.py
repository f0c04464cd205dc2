"""Plan every run a profile needs and train the missing ones on a process pool or a Dask cluster."""
from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import os
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from .config import RunConfig
from .train import ensemble_groups
from .errors import WdevError


@dataclass
class SweepResult:
    """What a sweep did: runs trained, found done, and failed (run id -> reason)."""

    trained: list[str] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)

    def summary(self) -> str:
        """One line per outcome, failures named."""
        lines = [f"{len(self.trained)} trained, {len(self.reused)} already in the store, {len(self.failed)} failed"]
        lines += [f"  FAILED {rid}: {why}" for rid, why in self.failed.items()]
        return "\n".join(lines)


def plan_profile(profile) -> list[RunConfig]:
    """Every run the profile's notebooks need, deduplicated, in a stable order."""
    from .book import notebook_parameters, toc_notebooks
    from .plan import notebook_runs
    from .profiles import REPO_ROOT

    seen: dict[str, RunConfig] = {}
    for name in toc_notebooks():
        params = notebook_parameters(REPO_ROOT / "notebooks" / f"{name}.ipynb", profile)
        for cfg in notebook_runs(name, params):
            seen.setdefault(cfg.run_id, cfg)
    return list(seen.values())


def run_flops(cfg: RunConfig, *, n_train: int, n_test: int, input_dim: int, n_classes: int) -> float:
    """Floating-point operations of one run: SGD steps (6 per weight and sample) plus the test pass (2)."""
    per_sample = input_dim * cfg.width + cfg.width * cfg.width + cfg.width * n_classes
    return float(cfg.epochs * (6 * n_train + 2 * n_test) * per_sample)


def dataset_sizes() -> dict[str, dict]:
    """Per data set: n_train, n_test, input_dim, n_classes; published sizes stand in for absent data."""
    from .data import dataset_table

    out = {}
    for row in dataset_table():
        fallback = dict(zip(("n_train", "n_test", "n_classes"), _PAPER_SIZES[row["name"]]))
        out[row["name"]] = {k: row[k] or fallback[k] for k in ("n_train", "n_test", "n_classes")} | {
            "input_dim": row["input_dim"]}
    return out


def longest_first(groups: list[list[RunConfig]], sizes: dict[str, dict]) -> list[list[RunConfig]]:
    """Ensembles by decreasing FLOPs: handing the longest out first keeps the last worker from finishing alone."""
    return sorted(groups, key=lambda g: -sum(run_flops(c, **sizes[c.dataset]) for c in g))


def makespan(seconds: list[float], workers: int) -> float:
    """Wall time of jobs handed in this order to `workers` workers, each job to the first free worker."""
    free = [0.0] * max(1, int(workers))
    for t in seconds:
        i = min(range(len(free)), key=free.__getitem__)
        free[i] += t
    return max(free)


def missing_configs(configs: list[RunConfig], store) -> list[RunConfig]:
    """The configs whose runs the store does not hold complete."""
    return [c for c in configs if not store.run(c).is_done]


def train_group(config_dicts: list[dict], store_path: str, threads: int) -> list[tuple[str, str, str]]:
    """Train one ensemble in this process; return (run_id, status, error) per member. Never raises."""
    import torch

    from .store import RunStore
    from .train import get_runs

    torch.set_num_threads(threads)
    configs = [RunConfig.from_dict(d) for d in config_dicts]
    try:
        runs = get_runs(configs, RunStore(store_path), train_missing=True, progress=False)
    except Exception as exc:  # a failed run is reported, the sweep goes on
        why = f"{type(exc).__name__}: {exc}".strip()
        detail = traceback.format_exc(limit=3).strip().splitlines()[-1]
        return [(c.run_id, "failed", why or detail) for c in configs]
    return [(r.config.run_id, r.status, "") for r in runs]


def _executor(workers: int, threads: int, scheduler: str | None, dask_local: int | None):
    """A concurrent.futures executor: a local spawn pool, or Dask's executor for a cluster."""
    if scheduler is None and dask_local is None:
        ctx = multiprocessing.get_context("spawn")
        return cf.ProcessPoolExecutor(max_workers=workers, mp_context=ctx), None
    try:
        from dask.distributed import Client, LocalCluster
    except ImportError as exc:  # pragma: no cover - dask is a dependency
        raise WdevError("Dask is not installed: pip install 'dask[distributed]'") from exc
    if scheduler is not None:
        try:
            client = Client(scheduler, timeout="20s")
        except OSError as exc:
            raise WdevError(f"cannot reach the Dask scheduler at {scheduler}: {exc}; is it running?") from exc
    else:
        cluster = LocalCluster(n_workers=dask_local, threads_per_worker=1, processes=True,
                               dashboard_address=None)
        client = Client(cluster)
    return client.get_executor(pure=False), client


def run_sweep(configs: list[RunConfig], store, *, workers: int | None = None, threads: int = 1,
              scheduler: str | None = None, dask_local: int | None = None,
              progress: bool = True) -> SweepResult:
    """Train every config the store lacks, grouped into ensembles, on the chosen executor.

    Local workers are spawned processes: from a script, call this under ``if __name__ == "__main__":``.
    """
    from tqdm.auto import tqdm

    result = SweepResult()
    todo = missing_configs(configs, store)
    done_ids = {c.run_id for c in configs} - {c.run_id for c in todo}
    result.reused = sorted(done_ids)
    if not todo:
        return result
    workers = workers or max(1, (os.cpu_count() or 1) // threads)
    executor, client = _executor(workers, threads, scheduler, dask_local)
    store_path = str(Path(store.path).resolve())
    bar = tqdm(total=len(todo), unit="run", desc="sweep", disable=not progress)
    try:
        # as large ensembles as leave no worker idle (a local pool starts its processes on demand)
        slots = workers if client is None else max(1, len(client.nthreads()))
        groups = longest_first(ensemble_groups(todo, min_groups=slots), dataset_sizes())
        futures = {executor.submit(train_group, [c.to_dict() for c in g], store_path, threads): g
                   for g in groups}
        for fut in cf.as_completed(futures):
            group = futures[fut]
            try:
                outcomes = fut.result()
            except Exception as exc:  # the worker died (killed, out of memory, lost)
                outcomes = [(c.run_id, "failed", f"worker lost: {type(exc).__name__}: {exc}") for c in group]
            for run_id, status, why in outcomes:
                if status == "failed":
                    result.failed[run_id] = why
                else:
                    result.trained.append(run_id)
            bar.update(len(group))
    finally:
        bar.close()
        executor.shutdown(wait=True)
        if client is not None:
            cluster = getattr(client, "cluster", None)
            client.close()
            if cluster is not None:
                cluster.close()
    return result


def _group_rate(width: int, members: int, device: str, threads: int | None = None) -> float:
    """Measured training FLOP/s (6*B*weights convention) of an ensemble of `members` networks of `width`,
    with `threads` torch threads (None: the current setting)."""
    import torch

    from .bench import BATCH, C, D, conventional_flops, engine_step_seconds
    from .ensemble import TensorData

    gen = torch.Generator().manual_seed(0)
    n = 8 * BATCH
    data = TensorData(torch.randint(0, 256, (n, D), dtype=torch.uint8, generator=gen).to(device),
                      torch.randint(0, C, (n,), generator=gen).to(device),
                      torch.rand(BATCH, D, generator=gen).to(device),
                      torch.randint(0, C, (BATCH,), generator=gen).to(device), C)
    before = torch.get_num_threads()
    torch.set_num_threads(threads or before)
    try:
        _, ens_seconds = engine_step_seconds(data, width, members, steps=8, repeats=1)
    finally:
        torch.set_num_threads(before)
    return members * conventional_flops(width) / ens_seconds


def estimate_plan(configs: list[RunConfig], store=None, devices=("cpu",), workers: int = 1,
                  threads: int | None = None) -> list[dict]:
    """One row per planned run: FLOPs, status, done (finished, diverged or not), its ensemble (`group`, as a
    sweep over `workers` workers would form it) and estimated seconds per device with `threads` threads.

    With store None the plan starts from nothing: every run is to train (status 'missing').
    """
    sizes = dataset_sizes()
    todo = list(configs) if store is None else missing_configs(configs, store)
    todo_ids = {c.run_id for c in todo}
    # the runs to train grouped and ordered exactly as run_sweep hands them out, then the finished ones
    groups = longest_first(ensemble_groups(todo, min_groups=workers), sizes) + ensemble_groups(
        [c for c in configs if c.run_id not in todo_ids])
    rates: dict[tuple, float] = {}
    rows = []
    for gi, group in enumerate(groups):
        for cfg in group:
            flops = run_flops(cfg, **sizes[cfg.dataset])
            status = "missing" if store is None else store.run(cfg).status
            row = {"run_id": cfg.run_id, "run": cfg.short(), "group": gi, "members": len(group),
                   "gflop": flops / 1e9, "status": status, "done": status in ("done", "diverged")}
            for dev in devices:
                key = (cfg.width, len(group), dev)
                if key not in rates:
                    rates[key] = _group_rate(cfg.width, len(group), dev, threads)
                row[f"est_s_{dev}"] = flops / rates[key]
            rows.append(row)
    return rows


def estimate_wall_seconds(rows: list[dict], workers: int, device: str = "cpu") -> float:
    """Estimated wall time of a sweep over `workers` workers: its ensembles still to train, in plan order."""
    per_group: dict[int, float] = {}
    for r in rows:
        if not r["done"]:
            per_group[r["group"]] = per_group.get(r["group"], 0.0) + r[f"est_s_{device}"]
    return makespan(list(per_group.values()), workers)


# Sizes (train, test, classes) of data sets not on this machine, for estimates only (HASYv2: one fold).
_PAPER_SIZES = {"mnist": (60000, 10000, 10), "fashion-mnist": (60000, 10000, 10), "hasyv2": (151406, 16827, 369),
                "mnist-5k": (4000, 1000, 10)}

"""Which runs each notebook needs: the one place that turns notebook parameters into RunConfigs.

The notebooks call ``load_runs(NAME, P)``; ``wdev sweep`` calls ``notebook_runs`` for every notebook
of a profile, so the sweep trains exactly the runs the book reads. Runs are shared between notebooks
whenever their settings agree: every run of one (epochs, snapshots) pair has the same snapshot schedule.
"""
from __future__ import annotations

import ast
import json
import time
from pathlib import Path

from .config import RunConfig
from .errors import ConfigError

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"
# (init, loss) variants compared in 09_beyond; the first is the paper's setting.
COMPARISONS = (("glorot_uniform", "keras"), ("he_uniform", "keras"), ("glorot_uniform", "logits"))


def snapshot_schedule(epochs: int, snapshots: int) -> tuple[int, ...]:
    """Interior epochs of `snapshots` evenly spaced intervals over 0..epochs (0 and the end are always kept)."""
    if isinstance(snapshots, bool) or not isinstance(snapshots, int) or snapshots < 1:
        raise ConfigError(f"snapshots={snapshots!r}: must be an integer >= 1 (1 keeps only the initial "
                          f"and final weights)")
    return tuple(sorted({round(epochs * k / snapshots) for k in range(1, snapshots)} - {0, epochs}))


def notebook_defaults(name: str, folder: Path = NOTEBOOK_DIR) -> dict:
    """The default parameters of notebooks/NAME.ipynb, read from its cell tagged `parameters`."""
    path = folder / f"{name}.ipynb"
    if not path.exists():
        raise ConfigError(f"no notebook {path}; known: {sorted(p.stem for p in folder.glob('*.ipynb'))}")
    cells = [c for c in json.loads(path.read_text())["cells"]
             if "parameters" in c.get("metadata", {}).get("tags", [])]
    if len(cells) != 1:
        raise ConfigError(f"{path}: needs exactly one cell tagged 'parameters', found {len(cells)}")
    defaults = {}
    for node in ast.parse("".join(cells[0]["source"])).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            defaults[node.targets[0].id] = ast.literal_eval(node.value)
    return defaults


def _run(p: dict, *, width: int, seed: int, epochs: int, lr: float, snapshots: int, **kw) -> RunConfig:
    return RunConfig(dataset=p["dataset"], batch_size=p["batch_size"], device=p.get("device", "auto"),
                     width=width, seed=seed, epochs=epochs, lr=lr,
                     snapshot_epochs=snapshot_schedule(epochs, snapshots), **kw)


def grid_runs(p: dict) -> list[RunConfig]:
    """widths x seeds at the notebook's epochs, learning rate and snapshot count."""
    return [_run(p, width=w, seed=s, epochs=p["epochs"], lr=p["lr"], snapshots=p["snapshots"])
            for w in p["widths"] for s in p["seeds"]]


def dataset_grid_runs(p: dict) -> list[RunConfig]:
    """The grid on each data set of `datasets` (None: on `dataset` alone)."""
    return [c for name in (p["datasets"] or [p["dataset"]]) for c in grid_runs({**p, "dataset": name})]


def width_runs(p: dict) -> list[RunConfig]:
    """One width (`width`) over the seeds, at the grid's settings."""
    return grid_runs({**p, "widths": [p["width"]]})


def mark_runs(p: dict) -> list[RunConfig]:
    """The letter-mark pair of Fig. 1: the stable network, then the unstable one (each its width and lr)."""
    return [_run(p, width=p[f"{k}_width"], seed=p["mark_seed"], epochs=p["mark_epochs"], lr=p[f"{k}_lr"],
                 snapshots=p["mark_snapshots"], mask=p["mark"]) for k in ("stable", "unstable")]


def lr_grid_runs(p: dict) -> list[RunConfig]:
    """The width x learning-rate grid of the untrainability map."""
    return [_run(p, width=w, seed=s, epochs=p["lr_epochs"], lr=lr, snapshots=p["snapshots"])
            for lr in p["lrs"] for w in p["lr_widths"] for s in p["lr_seeds"]]


def comparison_runs(p: dict) -> list[RunConfig]:
    """Glorot vs He initialisation and clipped vs plain loss at one width and learning rate."""
    return [_run(p, width=p["compare_width"], seed=s, epochs=p["lr_epochs"], lr=p["compare_lr"],
                 snapshots=p["snapshots"], init=init, loss=loss)
            for init, loss in COMPARISONS for s in p["lr_seeds"]]


PLANNERS = {
    "01_data_model": lambda p: [],
    "02_letter_mark": mark_runs,
    "03_regimes": grid_runs,
    "04_initial_vs_final": width_runs,
    "05_conditional_deviation": grid_runs,
    "06_evolution": grid_runs,
    "07_width": grid_runs,
    "08_other_datasets": dataset_grid_runs,
    "09_beyond": lambda p: grid_runs(p) + comparison_runs(p) + lr_grid_runs(p),
    "10_scorecard": lambda p: grid_runs(p) + mark_runs(p) + lr_grid_runs(p),
    "11_performance": lambda p: [],  # times the engine; stores no runs
}


def notebook_params(notebook_name: str, params: dict) -> dict:
    """The parameters the notebook runs with: its defaults updated by those of `params` it declares."""
    defaults = notebook_defaults(notebook_name)
    return {**defaults, **{k: v for k, v in params.items() if k in defaults}}


def notebook_runs(notebook_name: str, params: dict) -> list[RunConfig]:
    """Every run the notebook needs with these parameters, deduplicated, in a stable order.

    Parameters the notebook does not declare are ignored and those it declares but `params` lacks take
    the notebook's defaults, exactly as `wdev book` passes them.
    """
    if notebook_name not in PLANNERS:
        raise ConfigError(f"no run plan for notebook {notebook_name!r}; known: {', '.join(PLANNERS)}")
    unique: dict[str, RunConfig] = {}
    for cfg in PLANNERS[notebook_name](notebook_params(notebook_name, params)):
        unique.setdefault(cfg.run_id, cfg)
    return list(unique.values())


def load_runs(configs: list[RunConfig], store=None) -> list:
    """The runs of `configs` from the store (None: the default store), training the missing ones first."""
    from .store import RunStore
    from .train import get_runs

    store = RunStore(store)
    missing = sum(not store.run(c).is_done for c in configs)
    start = time.perf_counter()
    runs = get_runs(configs, store, progress=False)
    print(f"{len(configs)} runs: {len(configs) - missing} found in the store {store.path}, "
          f"{missing} trained now ({time.perf_counter() - start:.0f} s)")
    return runs


def select(runs: list, configs: list[RunConfig]) -> list:
    """The runs among `runs` that belong to `configs`, in the order of `configs`."""
    by_id = {r.config.run_id: r for r in runs}
    missing = [c.short() for c in configs if c.run_id not in by_id]
    if missing:
        raise ConfigError(f"{len(missing)} run(s) not among those loaded: {missing[:5]}")
    return [by_id[c.run_id] for c in configs]

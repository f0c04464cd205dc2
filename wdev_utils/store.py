"""The run store: one folder per run (named by RunConfig.run_id), atomic writes, locks, checkpoints, listing.

Layout of runs/<run_id>/: config.json, metrics.csv, init.safetensors, final.safetensors,
snapshots/epoch-NNNNN.safetensors, checkpoint/ (while training), summary.json, DONE (written last:
a JSON manifest of every file's size and, for the small ones, SHA-256). A run whose files do not match
its manifest, or that lacks DONE, is incomplete. Nothing is pickled.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import struct
import uuid
from pathlib import Path

import numpy as np

from .config import RunConfig
from .errors import ConfigError, StoreError
from .model import PARAM_NAMES
from .probes import METRIC_COLUMNS

RUN_ID_RE = re.compile(r"^[0-9a-f]{16}$")
_HASHED_SUFFIXES = (".json", ".csv")
_ST_DTYPES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}


# ---------- files ----------

def atomic_write(path: Path, data: bytes | str) -> None:
    """Write a file so that readers see the old content or the new, never a part (temp file + os.replace)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _finite_or_none(v):
    if isinstance(v, (float, np.floating)):
        return float(v) if np.isfinite(v) else None
    return v


def write_json(path: Path, obj) -> None:
    """Atomically write JSON (non-finite floats become null)."""
    if isinstance(obj, dict):
        obj = {k: _finite_or_none(v) for k, v in obj.items()}
    atomic_write(path, json.dumps(obj, indent=1, sort_keys=True) + "\n")


def read_json(path: Path):
    """Read JSON, raising StoreError (naming the file) if it is missing or not valid JSON."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise StoreError(f"cannot read {path}: {exc}") from None


def save_tensors(path: Path, tensors: dict, metadata: dict | None = None) -> None:
    """Atomically write torch tensors or numpy arrays as a safetensors file."""
    from safetensors.torch import save

    import torch

    ts = {k: (torch.from_numpy(np.ascontiguousarray(v)) if isinstance(v, np.ndarray) else v.contiguous())
          for k, v in tensors.items()}
    atomic_write(path, save(ts, metadata={k: str(v) for k, v in (metadata or {}).items()}))


def safetensors_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Names and shapes in a safetensors file after checking its header against the file size (no data read)."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise ValueError("file shorter than its 8-byte header length")
            (n,) = struct.unpack("<Q", head)
            if n > size - 8:
                raise ValueError("header length exceeds the file")
            header = json.loads(f.read(n))
        header.pop("__metadata__", None)
        end, shapes = 0, {}
        for name, info in header.items():
            start, stop = info["data_offsets"]
            if stop - start != int(np.prod(info["shape"], dtype=np.int64)) * _ST_DTYPES[info["dtype"]]:
                raise ValueError(f"tensor {name} has a size that does not match its shape")
            end = max(end, stop)
            shapes[name] = tuple(info["shape"])
        if 8 + n + end != size:
            raise ValueError(f"file is {size} bytes, header says {8 + n + end}")
        return shapes
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise StoreError(f"{path} is not a readable safetensors file ({exc}); the run must be retrained") from None


def load_tensors(path: Path, backend: str = "numpy") -> dict:
    """Read a safetensors file as numpy arrays (or torch tensors), StoreError if it is corrupt."""
    safetensors_shapes(path)
    try:
        if backend == "torch":
            from safetensors.torch import load
        else:
            from safetensors.numpy import load
        return load(Path(path).read_bytes())
    except Exception as exc:  # safetensors raises its own error types
        raise StoreError(f"cannot read {path}: {exc}") from None


def write_metrics(path: Path, rows: np.ndarray) -> None:
    """Atomically write metrics rows (epoch first, METRIC_COLUMNS order) as CSV with round-trip floats."""
    lines = [",".join(METRIC_COLUMNS)]
    for r in np.asarray(rows, dtype=np.float64):
        lines.append(",".join([str(int(r[0]))] + [repr(float(v)) for v in r[1:]]))
    atomic_write(path, "\n".join(lines) + "\n")


def read_metrics(path: Path) -> np.ndarray:
    """Metrics rows of a CSV written by write_metrics, checked (columns, consecutive epochs from 0)."""
    try:
        lines = Path(path).read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise StoreError(f"cannot read {path}: {exc}") from None
    if not lines or lines[0].split(",") != list(METRIC_COLUMNS):
        raise StoreError(f"{path} does not have the metrics columns {','.join(METRIC_COLUMNS[:3])},...")
    try:
        rows = np.array([[float(v) for v in line.split(",")] for line in lines[1:]], dtype=np.float64)
        if rows.shape[1:] != (len(METRIC_COLUMNS),) and len(rows):
            raise ValueError("wrong number of fields")
    except ValueError as exc:
        raise StoreError(f"{path} has a malformed row ({exc})") from None
    rows = rows.reshape(-1, len(METRIC_COLUMNS))
    if not np.array_equal(rows[:, 0], np.arange(len(rows))):
        raise StoreError(f"{path}: epochs are not 0, 1, 2, ... (file truncated or edited)")
    return rows


def _sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def snapshot_name(epoch: int) -> str:
    """Relative path of a snapshot file."""
    return f"snapshots/epoch-{epoch:05d}.safetensors"


# ---------- runs ----------

class Run:
    """One run folder: its config, status, summary, metrics and weights (read-only)."""

    def __init__(self, path: Path, config: RunConfig):
        self.path = Path(path)
        self.config = config
        self._status = None
        self._metrics = None

    def __repr__(self):
        return f"Run({self.config.run_id}, {self.config.short()}, {self.status})"

    @property
    def run_id(self) -> str:
        """The run's id (folder name)."""
        return self.config.run_id

    def refresh(self) -> "Run":
        """Forget the cached status and metrics (after the run was trained elsewhere)."""
        self._status = None
        self._metrics = None
        return self

    def expected_files(self) -> list[str]:
        """Files a finished run holds, relative to its folder (DONE excluded)."""
        return (["config.json", "metrics.csv", "summary.json", "init.safetensors", "final.safetensors"]
                + [snapshot_name(e) for e in self.config.snapshot_epochs])

    def problems(self) -> list[str]:
        """Why the run is not complete (empty list for a done or diverged run)."""
        if not self.path.is_dir():
            return ["no run folder"]
        if not (self.path / "DONE").exists():
            return ["no DONE marker: training unfinished or interrupted"]
        try:
            manifest = read_json(self.path / "DONE")["files"]
            out = []
            for rel in self.expected_files():
                f, entry = self.path / rel, manifest.get(rel)
                if entry is None:
                    out.append(f"{rel} is not in the DONE manifest")
                elif not f.exists():
                    out.append(f"{rel} is missing")
                elif f.stat().st_size != entry["size"]:
                    out.append(f"{rel} has {f.stat().st_size} bytes, expected {entry['size']} (truncated or changed)")
                elif rel.endswith(_HASHED_SUFFIXES) and _sha256(f) != entry["sha256"]:
                    out.append(f"{rel} does not match its checksum (corrupt or edited)")
                elif rel.endswith(".safetensors"):
                    safetensors_shapes(f)
            if not out and RunConfig.from_dict(read_json(self.path / "config.json")).run_id != self.run_id:
                out.append("config.json belongs to another configuration")
            if not out and read_json(self.path / "summary.json").get("status") not in ("done", "diverged"):
                out.append("summary.json has no valid status")
            return out
        except (StoreError, ConfigError, KeyError, TypeError, AttributeError) as exc:
            return [str(exc)]

    @property
    def status(self) -> str:
        """'done', 'diverged', 'incomplete' or 'missing'."""
        if self._status is None:
            probs = self.problems()
            if probs == ["no run folder"]:
                self._status = "missing"
            elif probs:
                self._status = "incomplete"
            else:
                self._status = read_json(self.path / "summary.json")["status"]
        return self._status

    @property
    def is_done(self) -> bool:
        """True when the run finished (done or diverged) and its files are intact."""
        return self.status in ("done", "diverged")

    @property
    def summary(self) -> dict:
        """summary.json as a dict ({} while the run is not finished or the file is unreadable)."""
        try:
            s = read_json(self.path / "summary.json")
        except StoreError:
            return {}
        return s if isinstance(s, dict) else {}

    @property
    def metrics(self):
        """metrics.csv as a pandas DataFrame (one row per epoch, epoch 0 = before training).

        A finished run's files never change, so its table is read once and a copy handed out.
        """
        import pandas as pd

        if self._metrics is not None:
            return self._metrics.copy()
        rows = read_metrics(self.path / "metrics.csv")
        df = pd.DataFrame(rows, columns=list(METRIC_COLUMNS))
        df["epoch"] = df["epoch"].astype(int)
        if self.is_done:
            self._metrics = df
            return df.copy()
        return df

    @property
    def snapshot_epochs(self) -> list[int]:
        """Epochs with stored weights: 0, the scheduled snapshots, the last epoch."""
        return [0, *self.config.snapshot_epochs, self.config.epochs]

    def weights(self, which="final") -> dict[str, np.ndarray]:
        """Weights and biases: which = 'init', 'final' or a stored epoch (see snapshot_epochs)."""
        if which == "init" or which == 0:
            rel = "init.safetensors"
        elif which == "final" or which == self.config.epochs:
            rel = "final.safetensors"
        elif isinstance(which, (int, np.integer)) and int(which) in self.config.snapshot_epochs:
            rel = snapshot_name(int(which))
        else:
            raise StoreError(f"no weights for {which!r} in run {self.run_id}: use 'init', 'final' or one of "
                             f"the stored epochs {self.snapshot_epochs}")
        path = self.path / rel
        if not path.exists():
            raise StoreError(f"run {self.run_id} has no {rel} ({self.status}); train it first")
        return load_tensors(path)

    @property
    def checkpoint_epoch(self) -> int | None:
        """Epoch of the resumable checkpoint of an unfinished run, if any."""
        try:
            return int(read_json(self.path / "checkpoint" / "latest.json")["epoch"])
        except (StoreError, KeyError, TypeError, ValueError):
            return None


class RunWriter:
    """Writes one run's files as training proceeds; DONE goes last (see Run for the layout)."""

    def __init__(self, run: Run):
        self.run = run
        self.path = run.path

    def start(self, meta: dict) -> None:
        """Clear any leftovers of an earlier attempt and write config.json."""
        self.path.mkdir(parents=True, exist_ok=True)
        for rel in ("DONE", "summary.json", "final.safetensors", "metrics.csv"):
            (self.path / rel).unlink(missing_ok=True)
        for rel in ("snapshots", "checkpoint"):
            shutil.rmtree(self.path / rel, ignore_errors=True)
        for tmp in self.path.glob(".*.tmp"):  # left by a process killed while writing
            tmp.unlink(missing_ok=True)
        write_json(self.path / "config.json", {**self.run.config.to_dict(), "run_id": self.run.run_id, **meta})

    def weights(self, rel: str, params: dict, epoch: int) -> None:
        """Write init/final/snapshot weights."""
        save_tensors(self.path / rel, {k: params[k] for k in PARAM_NAMES}, {"epoch": epoch, "run_id": self.run.run_id})

    def checkpoint(self, epoch: int, state: dict, rows: np.ndarray) -> None:
        """Save a resumable state (tensors incl. RNG state) and the metrics rows so far; latest.json goes last."""
        ck = self.path / "checkpoint"
        st, mt = f"state-{epoch:05d}.safetensors", f"metrics-{epoch:05d}.csv"
        save_tensors(ck / st, state, {"epoch": epoch})
        write_metrics(ck / mt, rows)
        write_metrics(self.path / "metrics.csv", rows)  # progress visible to readers; DONE is what counts
        write_json(ck / "latest.json", {"epoch": epoch, "run_id": self.run.run_id, "state": st, "metrics": mt,
                                        "sha256": {st: _sha256(ck / st), mt: _sha256(ck / mt)}})
        for old in ck.iterdir():
            if old.name not in (st, mt, "latest.json"):
                old.unlink(missing_ok=True)

    def load_checkpoint(self) -> tuple[int, dict, np.ndarray] | None:
        """(epoch, state tensors, metrics rows) of a valid checkpoint whose earlier files are intact, else None."""
        ck = self.path / "checkpoint"
        try:
            info = read_json(ck / "latest.json")
            epoch = int(info["epoch"])
            if info["run_id"] != self.run.run_id or epoch >= self.run.config.epochs:
                return None
            for rel, digest in info["sha256"].items():
                if _sha256(ck / rel) != digest:
                    return None
            rows = read_metrics(ck / info["metrics"])
            state = load_tensors(ck / info["state"], backend="torch")
            if len(rows) != epoch + 1 or not all(k in state for k in PARAM_NAMES + ("rng.shuffle",)):
                return None
            safetensors_shapes(self.path / "init.safetensors")
            for e in self.run.config.snapshot_epochs:
                if e <= epoch:
                    safetensors_shapes(self.path / snapshot_name(e))
            RunConfig.from_dict(read_json(self.path / "config.json"))
            return epoch, state, rows
        except (StoreError, ConfigError, OSError, KeyError, TypeError, ValueError):
            return None

    def finish(self, final: dict, rows: np.ndarray, summary: dict) -> None:
        """Write final weights, metrics and summary, then DONE (manifest), then drop the checkpoint."""
        self.weights("final.safetensors", final, int(rows[-1, 0]))
        write_metrics(self.path / "metrics.csv", rows)
        write_json(self.path / "summary.json", summary)
        files = {}
        for rel in self.run.expected_files():
            f = self.path / rel
            files[rel] = {"size": f.stat().st_size}
            if rel.endswith(_HASHED_SUFFIXES):
                files[rel]["sha256"] = _sha256(f)
        write_json(self.path / "DONE", {"files": files})
        shutil.rmtree(self.path / "checkpoint", ignore_errors=True)
        self.run.refresh()


class RunStore:
    """A folder of runs: path, else $WDEV_RUNS, else ./runs."""

    def __init__(self, path: str | os.PathLike | None = None):
        self.path = Path(path or os.environ.get("WDEV_RUNS") or "runs").expanduser().resolve()

    def __repr__(self):
        return f"RunStore({str(self.path)!r})"

    def run(self, cfg: RunConfig) -> Run:
        """The Run for a config (it may not exist yet: status 'missing')."""
        if not isinstance(cfg, RunConfig):
            raise ConfigError(f"expected a RunConfig, got {type(cfg).__name__}")
        return Run(self.path / cfg.run_id, cfg)

    def writer(self, cfg: RunConfig) -> RunWriter:
        """A writer for the config's run folder (hold store.lock(cfg) while writing)."""
        return RunWriter(self.run(cfg))

    def lock(self, cfg: RunConfig):
        """An inter-process lock (filelock.FileLock) guarding the config's run folder."""
        from filelock import FileLock

        (self.path / ".locks").mkdir(parents=True, exist_ok=True)
        return FileLock(str(self.path / ".locks" / f"{cfg.run_id}.lock"))

    def list(self) -> list[Run]:
        """Every run folder with a readable config.json, sorted by dataset, width, seed."""
        runs = []
        if not self.path.is_dir():
            return runs
        for d in self.path.iterdir():
            if not (d.is_dir() and RUN_ID_RE.match(d.name)):
                continue
            try:
                cfg = RunConfig.from_dict(read_json(d / "config.json"))
            except (StoreError, ConfigError, TypeError):
                continue
            if cfg.run_id == d.name:
                runs.append(Run(d, cfg))
        return sorted(runs, key=lambda r: (r.config.dataset, r.config.width, r.config.lr, r.config.epochs,
                                           r.config.mask, r.config.seed, r.run_id))


def _fmt(v, spec=".4g") -> str:
    return "-" if v is None or (isinstance(v, float) and not np.isfinite(v)) else format(v, spec)


def runs_table(runs: list[Run]) -> list[dict]:
    """One row per run for `wdev runs`: id, status, key settings, epochs reached and key metrics."""
    rows = []
    for r in runs:
        c, s = r.config, (r.summary if r.is_done else {})
        reached = s.get("epochs") if s else r.checkpoint_epoch
        rows.append({"run_id": r.run_id, "status": r.status, "dataset": c.dataset, "width": c.width, "seed": c.seed,
                     "lr": _fmt(c.lr, "g"), "mask": c.mask, "epochs": f"{_fmt(reached, 'd')}/{c.epochs}",
                     "final_train": _fmt(s.get("final_train_loss")), "min_train": _fmt(s.get("min_train_loss")),
                     "test_acc": _fmt(s.get("final_test_acc"), ".3f"),
                     "diverged_at": _fmt(s.get("divergence_epoch"), "d")})
    return rows


def format_runs_table(runs: list[Run]) -> str:
    """Aligned plain-text table of runs_table(runs)."""
    rows = runs_table(runs)
    if not rows:
        return "no runs"
    cols = list(rows[0])
    cells = [cols] + [[str(r[c]) for c in cols] for r in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(cols))]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(line, widths)).rstrip() for line in cells)

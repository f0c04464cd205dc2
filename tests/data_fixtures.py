"""Writers of small data files in the real MNIST IDX and HASYv2 archive formats, for the data tests."""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import struct
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image

IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def idx_bytes(array: np.ndarray) -> bytes:
    """An IDX file of unsigned bytes holding `array`, written from the format description."""
    array = np.asarray(array, dtype=np.uint8)
    return bytes([0, 0, 8, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


def mnist_arrays(n_train=30, n_test=12, side=28, seed=0) -> dict[str, np.ndarray]:
    """Random images and labels keyed by IDX file name."""
    rng = np.random.default_rng(seed)
    return {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, side, side), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train, dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, side, side), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test, dtype=np.uint8),
    }


def write_idx_dir(folder: Path, arrays: dict[str, np.ndarray], gz: bool = False) -> None:
    """Write the four IDX files (optionally as .gz) into `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, array in arrays.items():
        data = idx_bytes(array)
        if gz:
            (folder / f"{name}.gz").write_bytes(gzip.compress(data))
        else:
            (folder / name).write_bytes(data)


def leftovers(root: Path) -> list[str]:
    """Temporary files or folders left anywhere under `root`."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.name.startswith(".tmp"))


def md5(path: Path) -> str:
    """Hex MD5 of a file."""
    return hashlib.md5(path.read_bytes()).hexdigest()


def png_bytes(pixels: np.ndarray, mode: str = "L") -> bytes:
    """PNG encoding of a uint8 array (grayscale, or RGB with equal channels when mode='RGB')."""
    image = Image.fromarray(pixels, mode="L")
    if mode != "L":
        image = image.convert(mode)
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def _csv_bytes(header, rows) -> bytes:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n", quotechar="'")  # as HASYv2's own files
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue().encode()


def hasy_members(symbol_ids=(31, 5, 77), per_symbol=4, n_folds=2, seed=0, top="") -> tuple[dict[str, bytes], dict]:
    """Archive members of a small HASYv2 (path -> bytes) and the truth: images, labels per fold."""
    rng = np.random.default_rng(seed)
    members, images, labels_rows = {}, {}, []
    latex = {s: f'\\sym{s},"{s}"' for s in symbol_ids}  # commas and double quotes occur in real LaTeX fields
    k = 0
    for s in symbol_ids:
        for j in range(per_symbol):
            name = f"hasy-data/v2-{k:05d}.png"
            pixels = rng.integers(0, 256, (32, 32), dtype=np.uint8)
            members[name] = png_bytes(pixels, "RGB" if k % 2 else "L")
            images[name] = pixels
            labels_rows.append((name, s, latex[s], 100 + j))
            k += 1
    members["hasy-data-labels.csv"] = _csv_bytes(("path", "symbol_id", "latex", "user_id"), labels_rows)
    members["symbols.csv"] = _csv_bytes(("symbol_id", "latex", "training_samples", "test_samples"),
                                        [(s, latex[s], per_symbol - 1, 1) for s in symbol_ids])
    truth = {}
    for fold in range(1, n_folds + 1):
        # Fold k tests on the ((k-1) mod per_symbol)-th sample of each symbol.
        test = [r for i, r in enumerate(labels_rows) if i % per_symbol == (fold - 1) % per_symbol]
        train = [r for r in labels_rows if r not in test]
        for split, rows in (("train", train), ("test", test)):
            members[f"classification-task/fold-{fold}/{split}.csv"] = _csv_bytes(
                ("path", "symbol_id", "latex", "user_id"), [(f"../../{r[0]}",) + r[1:] for r in rows])
            truth[(fold, split)] = (np.stack([images[r[0]].reshape(-1) for r in rows]),
                                    np.array([list(symbol_ids).index(r[1]) for r in rows]))
    if top:
        members = {f"{top}/{k}": v for k, v in members.items()}
    return members, truth


def write_tar(path: Path, members: dict[str, bytes], links: dict[str, tuple[bytes, str]] | None = None) -> str:
    """Write a bzip2 tar of `members` (+ links: name -> (type, target)); returns its MD5."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:bz2") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, (kind, target) in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = kind, target
            tar.addfile(info)
    return md5(path)

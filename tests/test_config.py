"""RunConfig: defaults, validation messages, normalisation and the stable content hash."""
import dataclasses
import json
import os
import subprocess
import sys

import re

import pytest

from wdev_utils.config import RunConfig, parse_int_list
from wdev_utils.errors import ConfigError


def test_defaults_are_the_papers_settings():
    c = RunConfig()
    assert (c.dataset, c.fold, c.width, c.depth, c.epochs) == ("mnist-5k", 1, 100, 2, 100)
    assert (c.lr, c.batch_size, c.seed, c.init, c.loss) == (0.1, 128, 0, "glorot_uniform", "keras")
    assert (c.mask, c.optimizer, c.momentum, c.snapshot_epochs, c.device) == ("none", "sgd", 0.0, (), "auto")
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.width = 3


BAD_FIELDS = [
    ("dataset", "cifar10", "dataset='cifar10': unknown data set"),
    ("fold", 11, "fold=11: must be an integer from 1 to 10"),
    ("fold", 2, "fold=2: folds exist only for hasyv2"),
    ("width", 0, "width=0: must be a positive integer"),
    ("width", 2.5, "width=2.5: must be a positive integer"),
    ("width", True, "width=True: must be a positive integer"),
    ("depth", 3, "depth=3: only depth=2"),
    ("epochs", 0, "epochs=0: must be a positive integer"),
    ("lr", -0.1, "lr=-0.1: must be a finite number > 0"),
    ("lr", float("nan"), "lr=nan: must be a finite number > 0"),
    ("lr", "0.1", "lr='0.1': must be a finite number > 0"),
    ("batch_size", 0, "batch_size=0: must be a positive integer"),
    ("seed", -1, "seed=-1: must be an integer from 0"),
    ("init", "xavier", "init='xavier': choose one of glorot_uniform"),
    ("loss", "mse", "loss='mse': choose 'keras'"),
    ("mask", "ab", "mask='ab': use 'none' or a single visible character"),
    ("mask", " ", "mask=' ': use 'none' or a single visible character"),
    ("optimizer", "adam", "optimizer='adam': only 'sgd'"),
    ("momentum", 1.0, "momentum=1.0: must be a number in [0, 1)"),
    ("snapshot_epochs", (5, 200), "snapshot_epochs=(5, 200): every epoch must lie in 0..epochs (100)"),
    ("snapshot_epochs", "10", "snapshot_epochs='10': must be a list of integer epochs"),
    ("device", "tpu", "device='tpu': choose 'auto', 'cpu' or 'cuda'"),
]


@pytest.mark.parametrize("field,value,message", BAD_FIELDS, ids=[f"{f}={v!r}" for f, v, _ in BAD_FIELDS])
def test_each_bad_field_has_its_message(field, value, message):
    with pytest.raises(ConfigError) as err:
        RunConfig(**{field: value})
    assert message in str(err.value)
    assert str(err.value).count("\n") == 1, "exactly one problem should be reported"


def test_every_bad_field_is_reported_at_once():
    with pytest.raises(ConfigError) as err:
        RunConfig(width=-1, lr=0, init="x", device="gpu")
    text = str(err.value)
    assert all(s in text for s in ("width=-1", "lr=0", "init='x'", "device='gpu'"))


def test_hasyv2_accepts_folds():
    assert RunConfig(dataset="hasyv2", fold=7).fold == 7


def test_run_id_is_16_hex_ignores_device_and_changes_with_every_other_field():
    base = RunConfig()
    assert re.fullmatch(r"[0-9a-f]{16}", base.run_id)
    assert base.replace(device="cpu").run_id == base.run_id
    changes = dict(dataset="mnist", width=101, epochs=99, lr=0.2, batch_size=64, seed=1, init="he_uniform",
                   loss="logits", mask="a", momentum=0.5, snapshot_epochs=(10,))
    ids = {base.replace(**{k: v}).run_id for k, v in changes.items()}
    assert len(ids) == len(changes) and base.run_id not in ids
    assert RunConfig(dataset="hasyv2", fold=2).run_id != RunConfig(dataset="hasyv2", fold=3).run_id


def test_equal_runs_hash_equal_after_normalisation():
    a = RunConfig(lr=1, snapshot_epochs=[20, 10, 10, 0, 100])
    b = RunConfig(lr=1.0, snapshot_epochs=(10, 20))
    assert a == b and a.run_id == b.run_id
    assert a.snapshot_epochs == (10, 20) and isinstance(a.lr, float)


def test_run_id_is_stable_across_processes():
    c = RunConfig(width=37, seed=5, mask="a", snapshot_epochs=(3, 7), epochs=10)
    code = ("from wdev_utils.config import RunConfig; print(RunConfig(width=37, seed=5, mask='a', "
            "snapshot_epochs=(3, 7), epochs=10).run_id)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONHASHSEED": "123"})
    assert out.stdout.strip() == c.run_id


def test_dict_round_trip_json_and_unknown_keys():
    c = RunConfig(width=12, snapshot_epochs=(2, 4), epochs=5, mask="a")
    d = json.loads(json.dumps(c.to_dict()))
    assert RunConfig.from_dict(d) == c
    assert RunConfig.from_dict({**d, "run_id": c.run_id, "versions": {}, "device_used": "cpu"}) == c
    with pytest.raises(ConfigError, match="unknown run configuration field.*'widht'"):
        RunConfig.from_dict({"widht": 3})


def test_replace_validates():
    with pytest.raises(ConfigError, match="width=0"):
        RunConfig().replace(width=0)


def test_group_key_ignores_seed_and_device_only():
    a = RunConfig(seed=1, device="cpu")
    assert a.group_key == RunConfig(seed=2).group_key
    assert a.group_key != RunConfig(seed=1, width=5).group_key


@pytest.mark.parametrize("text,expected", [("0-4", [0, 1, 2, 3, 4]), ("3", [3]), ("0,2,5-6", [0, 2, 5, 6]),
                                           ("1, 1, 0", [1, 0])])
def test_parse_int_list(text, expected):
    assert parse_int_list(text, "seeds") == expected


@pytest.mark.parametrize("text", ["", "a", "4-2", "1-", "-3"])
def test_parse_int_list_rejects_bad_text(text):
    with pytest.raises(ConfigError, match="seeds"):
        parse_int_list(text, "seeds")

"""Notebook parameter checks: unknown names, wrong types and good values."""
import pytest

from wdev_utils.errors import ConfigError
from wdev_utils.params import check_parameters

SCHEMA = {"dataset": str, "widths": list[int], "lr": float, "store": str | None, "animate": bool}


def _ns(**over):
    ns = {"np": object(), "In": [], "dataset": "mnist-5k", "widths": [10, 20], "lr": 0.1,
          "store": None, "animate": True}
    ns.update(over)
    return ns


BEFORE = {"np", "In"}


def test_good_values_pass_and_int_counts_as_float():
    params = check_parameters(_ns(lr=1), BEFORE, SCHEMA)
    assert params == {"dataset": "mnist-5k", "widths": [10, 20], "lr": 1, "store": None, "animate": True}


def test_unknown_parameter_is_named():
    with pytest.raises(ConfigError, match=r"unknown parameter 'width'.*takes: dataset, widths"):
        check_parameters(_ns(width=300), BEFORE, SCHEMA)


@pytest.mark.parametrize(
    "name,value,expected",
    [("widths", 300, "must be list\\[int\\]"), ("widths", [1.5], "must be list\\[int\\]"),
     ("lr", "0.1", "must be float"), ("animate", 1, "must be bool"), ("dataset", 3, "must be str"),
     ("lr", True, "must be float")],
)
def test_ill_typed_parameter_is_named(name, value, expected):
    with pytest.raises(ConfigError, match=f"parameter '{name}' {expected}"):
        check_parameters(_ns(**{name: value}), BEFORE, SCHEMA)


def test_private_names_are_ignored_and_missing_is_reported():
    ns = _ns(_i3="x")
    del ns["lr"]
    with pytest.raises(ConfigError, match="'lr' is not defined"):
        check_parameters(ns, BEFORE, SCHEMA)

"""Notebooks: clean sources, one parameters cell, table of contents in step, parameters checked at once."""
import ast
import json
from pathlib import Path

import pytest

from wdev_utils import plan
from wdev_utils.book import EXECUTED, toc_notebooks
from wdev_utils.errors import ConfigError
from wdev_utils.profiles import REPO_ROOT, load_profile, profile_names

NOTEBOOKS = sorted((REPO_ROOT / "notebooks").glob("*.ipynb"))
NAMES = [p.stem for p in NOTEBOOKS]


def _load(path: Path) -> dict:
    return json.loads(path.read_text())


def _source(cell) -> str:
    return "".join(cell["source"])


def _head(nb: dict):
    """The import cell, the parameters cell and the check cell: the first three code cells."""
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    return code[0], code[1], code[2]


def _exec_check(cell, ns: dict) -> None:
    """Run only the check_parameters statement of the check cell (the rest of the cell does real work)."""
    first = ast.parse(_source(cell)).body[0]
    exec(compile(ast.Module([first], type_ignores=[]), "<check>", "exec"), ns)


def test_there_are_notebooks():
    assert len(NOTEBOOKS) >= 10


@pytest.mark.parametrize("path", NOTEBOOKS, ids=NAMES)
def test_notebook_is_clean_with_one_parameters_cell(path):
    nb = _load(path)
    assert nb["metadata"]["kernelspec"] == {"name": "python3", "display_name": "Python 3", "language": "python"}
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert all(c["outputs"] == [] and c["execution_count"] is None for c in code), "committed with outputs"
    tagged = [c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1, f"{len(tagged)} cells tagged 'parameters'"
    first, params, check = _head(nb)
    assert params is tagged[0], "the parameters cell must be the second code cell"
    assert _source(first).rstrip().endswith("_before = set(globals())")
    assert _source(check).startswith("P = check_parameters(globals(), _before, {")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=NAMES)
def test_defaults_pass_the_notebooks_own_schema(path):
    first, params, check = _head(_load(path))
    ns: dict = {}
    exec(_source(first), ns)
    exec(_source(params), ns)
    declared = set(ns) - ns["_before"] - {"_before"}
    _exec_check(check, ns)
    assert set(ns["P"]) == declared, "schema and parameters cell declare different names"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=NAMES)
def test_papermill_and_the_run_plan_read_the_same_parameters(path):
    """papermill skips a parameter line it cannot parse (e.g. '=' in a comment): the book would then
    run with the notebook's default while the sweep planned the profile's value."""
    papermill = pytest.importorskip("papermill")
    assert set(papermill.inspect_notebook(str(path))) == set(plan.notebook_defaults(path.stem))


@pytest.mark.parametrize("profile", profile_names())
def test_profiles_give_every_notebook_well_typed_parameters(profile):
    """What `wdev book` would inject for this profile passes each notebook's check (no training)."""
    prof = load_profile(profile)
    for path in NOTEBOOKS:
        first, params, check = _head(_load(path))
        ns: dict = {}
        exec(_source(first), ns)
        exec(_source(params), ns)
        declared = set(ns) - ns["_before"] - {"_before"}
        unknown = set(prof.notebooks.get(path.stem) or {}) - declared
        assert not unknown, f"profile {profile} sets {unknown} that {path.stem} does not take"
        ns.update({k: v for k, v in prof.notebook_parameters(path.stem).items() if k in declared})
        _exec_check(check, ns)


def test_toc_and_notebooks_match():
    toc = toc_notebooks()
    assert sorted(toc) == NAMES, "every notebook in notebooks/ is in _toc.yml and vice versa"
    assert toc == sorted(toc), "chapters are in numeric order"
    assert all((REPO_ROOT / f"{EXECUTED}/{n}").parent == REPO_ROOT / EXECUTED for n in toc)


@pytest.mark.parametrize("params,message", [
    ({"widht": 300}, "unknown parameter 'widht' (this notebook takes: dataset, width, seed, per_class)"),
    ({"seed": "zero"}, "parameter 'seed' must be int, got str 'zero'"),
], ids=["unknown", "ill-typed"])
def test_bad_parameters_stop_the_notebook_at_once(tmp_path, params, message):
    papermill = pytest.importorskip("papermill")
    from papermill.exceptions import PapermillExecutionError

    out = tmp_path / "out.ipynb"
    with pytest.raises(PapermillExecutionError) as err:
        papermill.execute_notebook(str(REPO_ROOT / "notebooks" / "01_data_model.ipynb"), str(out),
                                   parameters=params, kernel_name="python3", cwd=str(tmp_path),
                                   progress_bar=False)
    assert err.value.ename == "ConfigError"
    assert message in err.value.evalue
    nb = _load(out)
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    failed = next(i for i, c in enumerate(code) if any(o["output_type"] == "error" for o in c["outputs"]))
    assert _source(code[failed]).startswith("P = check_parameters(")
    assert all(c["execution_count"] is None for c in code[failed + 1:]), "cells ran after the bad parameters"


def test_check_error_is_a_config_error():
    from wdev_utils.params import check_parameters

    with pytest.raises(ConfigError):
        check_parameters({"x": 1}, set(), {"y": int})

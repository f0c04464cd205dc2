"""The book builder: profiles, parameters passed to notebooks, failing notebooks named with their cell."""
from __future__ import annotations

import nbformat
import pytest

from wdev_utils.book import execute_notebook, notebook_parameters, toc_notebooks
from wdev_utils.errors import ConfigError, WdevError
from wdev_utils.profiles import Profile, load_profile, profile_names


def _notebook(path, *sources, params="x = 1"):
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell(params, metadata={"tags": ["parameters"]})]
    nb.cells += [nbformat.v4.new_code_cell(s) for s in sources]
    nbformat.write(nb, path)
    return path


def test_failing_notebook_is_named_with_its_cell(tmp_path):
    src = _notebook(tmp_path / "broken.ipynb", "y = 2", "raise ValueError('planted failure')")
    with pytest.raises(WdevError, match=r"broken.ipynb failed in cell \d+ \(ValueError: planted failure\)"):
        execute_notebook(src, tmp_path / "out" / "broken.ipynb", {"x": 3})
    assert (tmp_path / "out" / "broken.ipynb").exists(), "the executed notebook with the traceback is kept"


def test_profile_override_the_notebook_lacks_is_an_error(tmp_path):
    src = _notebook(tmp_path / "nb.ipynb")
    profile = Profile(name="t", description="", store=None, device="cpu", parameters={"x": 5, "other": 1},
                      notebooks={"nb": {"typo": 2}})
    with pytest.raises(ConfigError, match=r"sets \['typo'\] for nb.ipynb, which takes only \['x'\]"):
        notebook_parameters(src, profile)
    ok = Profile(name="t", description="", store=None, device="cpu", parameters={"x": 5, "other": 1})
    assert notebook_parameters(src, ok) == {"x": 5}, "shared parameters a notebook lacks are not passed"


def test_shipped_profiles_load_and_bad_ones_are_named(tmp_path):
    assert {"smoke", "quick", "fashion", "paper"} <= set(profile_names())
    for name in profile_names():
        assert load_profile(name).parameters
    bad = tmp_path / "bad.yml"
    bad.write_text("parameters: {}\nunknown_key: 1\n")
    with pytest.raises(ConfigError, match="unknown key"):
        load_profile(str(bad))
    bad.write_text("parameters: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_profile(str(bad))


def test_toc_lists_the_executed_notebooks_in_order():
    names = toc_notebooks()
    assert names == sorted(names) and names[0].startswith("01_")

"""`wdev sweep` and `wdev book` from the command line."""
from __future__ import annotations

import re

import pytest

from wdev_utils.cli import main
from wdev_utils.profiles import load_profile
from wdev_utils.store import RunStore
from wdev_utils.sweep import plan_profile


def test_dry_run_lists_every_planned_run_with_estimates(tmp_path, capsys):
    planned = plan_profile(load_profile("smoke"))
    assert main(["sweep", "--profile", "smoke", "--store", str(tmp_path), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert f"{len(planned)} runs planned" in out
    for cfg in planned:
        assert cfg.run_id in out
    assert "about" in out and " on cpu in one process" in out
    assert not any(tmp_path.iterdir()), "a dry run must not train anything"


def _estimates(out: str) -> tuple[float, float]:
    """(one process, with the workers) in seconds from the dry run's 'to train:' line."""
    line = next(s for s in out.splitlines() if s.startswith("to train:"))
    units = {"s": 1, "min": 60, "h": 3600}
    found = re.findall(r"about ([\d.e+-]+) (s|min|h) on cpu in one process, ([\d.e+-]+) (s|min|h) with", line)
    assert found, line
    v1, u1, v2, u2 = found[0]
    return float(v1) * units[u1], float(v2) * units[u2]


def test_dry_run_estimates_the_wall_time_for_the_workers_asked(tmp_path, capsys):
    args = ["sweep", "--profile", "smoke", "--store", str(tmp_path), "--dry-run", "--workers"]
    assert main(args + ["1"]) == 0
    one, wall = _estimates(capsys.readouterr().out)
    assert one > 0 and wall == pytest.approx(one, rel=0.01)  # one worker: the one-process time
    assert main(args + ["3"]) == 0
    out = capsys.readouterr().out
    one, wall = _estimates(out)
    assert "with 3 worker(s)" in out and 0 < wall < one


@pytest.mark.parametrize("option", ["--workers", "--threads", "--dask-local"])
@pytest.mark.parametrize("value", ["0", "-2", "two"])
def test_worker_counts_must_be_positive_whole_numbers(capsys, option, value):
    with pytest.raises(SystemExit) as exc:
        main(["sweep", "--profile", "smoke", "--dry-run", option, value])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {option}" in err and repr(value) in err


def test_sweep_trains_then_reuses(tmp_path, capsys):
    planned = plan_profile(load_profile("smoke"))
    assert main(["sweep", "--profile", "smoke", "--store", str(tmp_path), "--workers", "2", "--no-progress"]) == 0
    assert f"{len(planned)} trained, 0 already in the store, 0 failed" in capsys.readouterr().out
    assert all(RunStore(tmp_path).run(c).is_done for c in planned)
    assert main(["sweep", "--profile", "smoke", "--store", str(tmp_path), "--no-progress"]) == 0
    assert f"0 trained, {len(planned)} already in the store" in capsys.readouterr().out


def test_unknown_profile_is_a_clear_error(capsys):
    assert main(["sweep", "--profile", "nonesuch", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "unknown profile 'nonesuch'" in err and "smoke" in err


def test_unreachable_scheduler_is_a_clear_error(tmp_path, capsys):
    pytest.importorskip("distributed")
    code = main(["sweep", "--profile", "smoke", "--store", str(tmp_path), "--scheduler", "tcp://127.0.0.1:9",
                 "--no-progress"])
    assert code == 2
    assert "cannot reach the Dask scheduler at tcp://127.0.0.1:9" in capsys.readouterr().err

"""`wdev sweep` and `wdev book` from the command line."""
from __future__ import annotations

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
    assert "about" in out and "min on cpu" in out
    assert not any(tmp_path.iterdir()), "a dry run must not train anything"


def test_dry_run_estimates_the_wall_time_for_the_workers_asked(tmp_path, capsys):
    assert main(["sweep", "--profile", "smoke", "--store", str(tmp_path), "--dry-run", "--workers", "3"]) == 0
    line = [s for s in capsys.readouterr().out.splitlines() if s.startswith("to train:")][0]
    one, wall = (float(line.split(" min")[i].split()[-1]) for i in (0, 1))
    assert "with 3 worker(s)" in line and wall <= one


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

"""Build the book: execute each notebook with papermill, then render with Jupyter Book."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

from .errors import ConfigError, WdevError
from .profiles import REPO_ROOT, Profile, load_profile

EXECUTED = Path("book") / "executed"


def toc_notebooks(root: Path = REPO_ROOT) -> list[str]:
    """Names of the notebooks the table of contents places under book/executed/, in order."""
    toc = yaml.safe_load((root / "_toc.yml").read_text())
    files: list[str] = []

    def walk(node):
        if isinstance(node, dict):
            if "file" in node:
                files.append(str(node["file"]))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(toc)
    prefix = EXECUTED.as_posix() + "/"
    return [f[len(prefix):].removesuffix(".ipynb") for f in files if f.startswith(prefix)]


def notebook_parameters(notebook: Path, profile: Profile) -> dict:
    """The profile's parameters that this notebook declares; overrides it lacks are an error."""
    import papermill

    declared = papermill.inspect_notebook(str(notebook))
    if not declared:
        raise ConfigError(f"{notebook}: no cell tagged 'parameters'; tag the parameters cell")
    overrides = profile.notebooks.get(notebook.stem) or {}
    unknown = sorted(set(overrides) - set(declared))
    if unknown:
        raise ConfigError(
            f"profile {profile.name!r} sets {unknown} for {notebook.name}, which takes only {sorted(declared)}"
        )
    params = {k: v for k, v in profile.notebook_parameters(notebook.stem).items() if k in declared}
    if "store" in declared:
        params["store"] = str(store_path(profile))
    if "device" in declared:
        params["device"] = profile.device
    if "gif_dir" in declared:
        params["gif_dir"] = str(REPO_ROOT / EXECUTED)
    return params


def store_path(profile: Profile) -> Path:
    """Run store for a profile: $WDEV_RUNS, else the profile's `store`, else runs/."""
    path = os.environ.get("WDEV_RUNS") or profile.store or "runs"
    return (REPO_ROOT / path).resolve()


def execute_notebook(src: Path, dst: Path, params: dict) -> float:
    """Execute one notebook into dst with papermill; return its wall time in seconds."""
    import papermill
    from papermill.exceptions import PapermillExecutionError

    dst.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    try:
        papermill.execute_notebook(
            str(src), str(dst), parameters=params, kernel_name="python3",
            cwd=str(REPO_ROOT), progress_bar=False, report_mode=False,
        )
    except PapermillExecutionError as exc:
        raise WdevError(
            f"{src.name} failed in cell {exc.cell_index} ({exc.ename}: {exc.evalue}); "
            f"the executed notebook with the traceback is {dst}"
        ) from exc
    return time.perf_counter() - start


def _commit() -> str:
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True,
                             text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO_ROOT,
                               capture_output=True, text=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return sha + (" with uncommitted changes" if dirty else "")


def train_profile(profile: Profile) -> float:
    """Train every run the profile needs that the store lacks; return the training seconds of all of them."""
    from .store import RunStore
    from .sweep import plan_profile, run_sweep

    store = RunStore(store_path(profile))
    configs = plan_profile(profile)
    print(f"[wdev book] {len(configs)} runs needed; training those missing from {store.path} ...", flush=True)
    result = run_sweep(configs, store)
    if result.failed:
        raise WdevError("training failed, so the book cannot be built:\n" + result.summary())
    per_group: dict[str, float] = {}  # members of an ensemble share their wall time
    for c in configs:
        seconds = float(store.run(c).summary.get("seconds") or 0.0)
        per_group[c.group_key] = max(per_group.get(c.group_key, 0.0), seconds)
    return sum(per_group.values())


def write_build_info(profile: Profile, timings: dict[str, float], train_seconds: float, out: Path) -> None:
    """Write the front page's table of what this build ran (profile, data, sizes, time, commit)."""
    import torch

    p = profile.parameters
    device = profile.device if profile.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    rows = [
        ("profile", f"`{profile.name}`: {profile.description}"),
        ("data", ", ".join(map(str, p.get("datasets") or [p.get("dataset", "-")]))),
        ("widths", ", ".join(map(str, p.get("widths", [])))),
        ("seeds", ", ".join(map(str, p.get("seeds", [])))),
        ("epochs", str(p.get("epochs", "-"))),
        ("device", device),
        ("compute time", f"training {train_seconds / 60:.1f} min (summed over runs), "
                          f"notebook execution {sum(timings.values()) / 60:.1f} min"),
        ("commit", _commit()),
        ("built", time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())),
    ]
    lines = ["| | |", "|---|---|"] + [f"| {k} | {v} |" for k, v in rows]
    from .store import atomic_write

    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out, "\n".join(lines) + "\n")


def build_book(profile_name: str, *, only: list[str] | None = None, render: bool = True) -> Path:
    """Execute the notebooks for a profile and render the book; return the HTML folder."""
    profile = load_profile(profile_name)
    names = toc_notebooks()
    if only:
        missing = sorted(set(only) - set(names))
        if missing:
            raise ConfigError(f"not in _toc.yml: {missing}; choose from {names}")
        names = [n for n in names if n in only]
    train_seconds = train_profile(profile)
    timings: dict[str, float] = {}
    for name in names:
        src = REPO_ROOT / "notebooks" / f"{name}.ipynb"
        if not src.exists():
            raise ConfigError(f"_toc.yml lists book/executed/{name} but {src} does not exist")
        print(f"[wdev book] executing {src.relative_to(REPO_ROOT)} ...", flush=True)
        timings[name] = execute_notebook(src, REPO_ROOT / EXECUTED / f"{name}.ipynb",
                                         notebook_parameters(src, profile))
        print(f"[wdev book]   done in {timings[name]:.0f} s", flush=True)
    write_build_info(profile, timings, train_seconds, REPO_ROOT / EXECUTED / "build_info.md")
    if not render:
        return REPO_ROOT / EXECUTED
    return render_book()


def render_book(root: Path = REPO_ROOT) -> Path:
    """Render the book with Jupyter Book (execution off, warnings are errors)."""
    jb = shutil.which("jupyter-book", path=str(Path(sys.executable).parent)) or shutil.which("jupyter-book")
    if jb is None:
        raise WdevError("jupyter-book is not installed: run `make book` or pip install -e .")
    shutil.rmtree(root / "_build" / "html", ignore_errors=True)  # no stale pages from earlier builds
    cmd = [jb, "build", str(root), "--builder", "html", "-W", "-n", "--keep-going", "--all"]
    print("[wdev book] rendering:", " ".join(cmd[1:]), flush=True)
    result = subprocess.run(cmd, cwd=root)
    if result.returncode != 0:
        raise WdevError(f"jupyter-book build failed (exit {result.returncode}); see the messages above "
                        f"and {root / '_build' / 'html' / 'reports'}")
    html = root / "_build" / "html"
    print(f"[wdev book] the book is at {html / 'index.html'}", flush=True)
    return html

"""The `wdev` command line: thin wrappers over the wdev_utils API."""
from __future__ import annotations

import argparse
import os
import sys

from .errors import WdevError


def _cmd_datasets(args: argparse.Namespace) -> int:
    from . import data

    if args.download:
        for name in args.download:
            data.load_dataset(name, root=args.root, download=True)
    print(data.format_dataset_table(data.dataset_table(args.root)))
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from .config import RunConfig, parse_int_list
    from .train import train_runs

    _set_threads(args.threads)
    seeds = parse_int_list(args.seeds, "--seeds")
    snaps = tuple(parse_int_list(args.snapshot_epochs, "--snapshot-epochs")) if args.snapshot_epochs else ()
    configs = [RunConfig(dataset=args.dataset, fold=args.fold, width=w, depth=args.depth, epochs=args.epochs,
                         lr=args.lr, batch_size=args.batch_size, seed=s, init=args.init, loss=args.loss,
                         mask=args.mask, optimizer=args.optimizer, momentum=args.momentum, snapshot_epochs=snaps,
                         device=args.device)
               for w in args.width for s in seeds]
    runs = train_runs(configs, args.store, data_root=args.data_root, progress=not args.no_progress,
                      checkpoint_every=args.checkpoint_every)
    for run in runs:
        print(f"{run.path}\t{run.status}\t{run.config.short()}")
    return 0


def _cmd_runs(args: argparse.Namespace) -> int:
    from .store import RunStore, format_runs_table

    runs = RunStore(args.store).list()
    runs = [r for r in runs if (not args.status or r.status in args.status)
            and (not args.dataset or r.config.dataset == args.dataset)]
    print(format_runs_table(runs))
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from .bench import WIDTHS, format_benchmark, run_benchmark
    from .config import parse_int_list

    _set_threads(args.threads)
    widths = parse_int_list(args.widths, "--widths") if args.widths else WIDTHS
    res = run_benchmark(quick=args.quick, widths=widths, members=args.members, device=args.device,
                        naive_width=args.naive_width,
                        progress=lambda m: print(m, file=sys.stderr))
    print(format_benchmark(res))
    return 0


def _positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: must be at least 1")
    return value


def _duration(seconds: float) -> str:
    """A duration in the unit that reads best: s, min or h, three significant digits."""
    for unit, size in (("h", 3600.0), ("min", 60.0)):
        if seconds >= 1.5 * size:
            return f"{seconds / size:.3g} {unit}"
    return f"{seconds:.3g} s"


def _set_threads(threads: int | None) -> None:
    if threads:
        import torch

        torch.set_num_threads(threads)


def _cmd_sweep(args: argparse.Namespace) -> int:
    import logging

    from .profiles import load_profile
    from .store import RunStore
    from .sweep import estimate_plan, estimate_wall_seconds, plan_profile, run_sweep

    profile = load_profile(args.profile)
    store = RunStore(args.store or _profile_store(profile))
    configs = plan_profile(profile)
    if args.dry_run:
        import torch

        devices = ("cpu", "cuda") if torch.cuda.is_available() else ("cpu",)
        workers = args.dask_local or args.workers or max(1, (os.cpu_count() or 1) // args.threads)
        rows = estimate_plan(configs, store, devices, workers=workers, threads=args.threads)
        print(f"{len(rows)} runs planned for profile {profile.name!r} in {store.path}; times measured just now "
              f"with {args.threads} thread(s), the threads of one sweep worker")
        head = f"{'run_id':<16}  {'status':<10} {'members':>7} {'GFLOP':>9} " + " ".join(
            f"{'est s ' + d:>10}" for d in devices) + "  run"
        print(head)
        for r in rows:
            est = " ".join(f"{r[f'est_s_{d}']:>10.1f}" for d in devices)
            print(f"{r['run_id']:<16}  {r['status']:<10} {r['members']:>7} {r['gflop']:>9.1f} {est}  {r['run']}")
        todo = [r for r in rows if not r["done"]]
        for d in devices:
            total = sum(r[f"est_s_{d}"] for r in todo)
            wall = estimate_wall_seconds(rows, workers, d)
            print(f"to train: {len(todo)} runs, {sum(r['gflop'] for r in todo) / 1e3:.2f} TFLOP, "
                  f"about {_duration(total)} on {d} in one process, {_duration(wall)} with {workers} worker(s)")
        return 0
    logging.getLogger("distributed").setLevel(logging.WARNING)
    result = run_sweep(configs, store, workers=args.workers, threads=args.threads,
                       scheduler=args.scheduler, dask_local=args.dask_local, progress=not args.no_progress)
    print(result.summary())
    return 1 if result.failed else 0


def _profile_store(profile) -> str:
    from .book import store_path

    return str(store_path(profile))


def _cmd_book(args: argparse.Namespace) -> int:
    from .book import build_book, render_book

    if args.render_only:
        render_book()
    else:
        build_book(args.profile, only=args.only)
    return 0


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser with every subcommand registered."""
    parser = argparse.ArgumentParser(prog="wdev", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("datasets", help="list the data sets, where they come from and whether they are here")
    p.add_argument("--root", default=None, help="data folder (default: $WDEV_DATA or ~/.cache/wdev)")
    p.add_argument("--download", nargs="+", metavar="NAME", default=None,
                   help="download (or unpack) these data sets first")
    p.set_defaults(func=_cmd_datasets)

    from .config import DEVICES, INITS, LOSSES, OPTIMIZERS, RunConfig

    d = RunConfig()
    p = sub.add_parser("train", help="train runs into the store (seeds of one configuration as one ensemble)")
    p.add_argument("--dataset", default=d.dataset, help=f"data set (default {d.dataset})")
    p.add_argument("--fold", type=int, default=d.fold, help="HASYv2 fold 1-10 (default 1)")
    p.add_argument("--width", type=int, nargs="+", default=[d.width], help=f"hidden width(s) (default {d.width})")
    p.add_argument("--depth", type=int, default=d.depth, help="hidden layers (only 2 is supported)")
    p.add_argument("--epochs", type=int, default=d.epochs, help=f"epochs (default {d.epochs})")
    p.add_argument("--lr", type=float, default=d.lr, help=f"learning rate (default {d.lr})")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help=f"batch size (default {d.batch_size})")
    p.add_argument("--seeds", "--seed", default="0", help="seeds, e.g. 0-4 or 0,3,7 (default 0)")
    p.add_argument("--init", default=d.init, choices=INITS, help=f"initialiser (default {d.init})")
    p.add_argument("--loss", default=d.loss, choices=LOSSES,
                   help="keras: clipped softmax cross-entropy (default); logits: plain log-softmax")
    p.add_argument("--mask", default=d.mask, help="letter stamped into fc2 at init, e.g. a (default none)")
    p.add_argument("--optimizer", default=d.optimizer, choices=OPTIMIZERS, help="optimiser (default sgd)")
    p.add_argument("--momentum", type=float, default=d.momentum, help="SGD momentum (default 0)")
    p.add_argument("--snapshot-epochs", default="", help="epochs whose weights are stored, e.g. 250,500")
    p.add_argument("--device", default=d.device, choices=DEVICES, help="auto, cpu or cuda (default auto)")
    p.add_argument("--store", default=None, help="run store folder (default: $WDEV_RUNS or ./runs)")
    p.add_argument("--data-root", default=None, help="data folder (default: $WDEV_DATA or ~/.cache/wdev)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--checkpoint-every", type=int, default=5, help="epochs between checkpoints (default 5)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("runs", help="list the runs in the store with their status and key metrics")
    p.add_argument("--store", default=None, help="run store folder (default: $WDEV_RUNS or ./runs)")
    p.add_argument("--status", nargs="+", choices=("done", "diverged", "incomplete"), help="only these statuses")
    p.add_argument("--dataset", default=None, help="only this data set")
    p.set_defaults(func=_cmd_runs)

    p = sub.add_parser("bench", help="measure training throughput against the matmul peak and a naive loop")
    p.add_argument("--quick", action="store_true", help="fewer steps (about a minute)")
    p.add_argument("--widths", default=None, help="widths, e.g. 10,100,1000 (default 10,50,100,300,500,1000)")
    p.add_argument("--members", type=int, default=8, help="ensemble size (default 8)")
    p.add_argument("--naive-width", type=int, default=100, help="width of the naive-loop comparison (default 100)")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="device (default cpu)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.set_defaults(func=_cmd_bench)

    p = sub.add_parser("sweep", help="train every run a profile's notebooks need, locally or on a Dask cluster")
    p.add_argument("--profile", default="quick", help="profile name or .yml path (default quick)")
    p.add_argument("--store", default=None, help="run store folder (default: $WDEV_RUNS, the profile's, or ./runs)")
    p.add_argument("--dry-run", action="store_true", help="list the planned runs with FLOPs and time estimates")
    p.add_argument("--workers", type=_positive_int, default=None,
                   help="local worker processes (default: cores / threads); with --dry-run also the workers "
                        "the wall time is estimated for")
    p.add_argument("--threads", type=_positive_int, default=1, help="torch threads per worker (default 1)")
    ex = p.add_mutually_exclusive_group()
    ex.add_argument("--scheduler", default=None, help="Dask scheduler address, e.g. tcp://host:8786")
    ex.add_argument("--dask-local", type=_positive_int, default=None, metavar="N",
                    help="start a local Dask cluster of N workers")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_sweep)

    p = sub.add_parser("book", help="execute the notebooks with a profile and render the book")
    p.add_argument("--profile", default="quick", help="profile name or .yml path (default quick)")
    p.add_argument("--only", nargs="+", default=None, help="execute only these notebooks (names from _toc.yml)")
    p.add_argument("--render-only", action="store_true", help="render the already executed notebooks")
    p.set_defaults(func=_cmd_book)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; user errors print one line and exit with status 2."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except WdevError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

"""``python -m hrtem_core batch INPUT... --out DIR [options]``: many files on a Dask cluster.

INPUT: files, folders (searched recursively for supported extensions, or for ``--glob``) and glob
patterns. Writes into DIR (see :mod:`hrtem_core.batch`): ``windows.parquet/`` (one row per
window of every file, partitioned by ``file``), ``files.csv`` (one row per file: the summary
fields of ``analyze``, defocus, content hash, error), ``profile.csv`` (the series profile when
defocus values are known) and the manifest ``_done.jsonl``. Running it again into the same DIR
resumes: files already done with the same content and parameters are skipped.

Scheduler: ``--scheduler local`` (default; ``processes`` is the same) starts a LocalCluster of
``--workers`` processes (default: one per CPU this process may use), one thread each;
``--scheduler tcp://HOST:PORT`` sends the tasks to a running ``dask-scheduler`` whose workers
have the project installed and see the files at the same paths.

Prints one JSON object on stdout (counts, timing, output paths, the best focus [nm] of the
profile); a progress bar on stderr (one step per finished file), one ``warning: ...`` line per
failed file. Exit code 0 when every file was analysed, 2 when any failed (the others are
written) or for bad input (one line ``error: ...``).
"""

from __future__ import annotations

import argparse
import json
import sys

from hrtem_core.commands._options import (
    ProgressBar,
    add_analysis_options,
    params_from_args,
    pixel_size_from_args,
    positive_int,
)
from hrtem_core.commands.info import seconds_arg


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the ``batch`` sub-command."""
    parser = sub.add_parser(
        "batch",
        help="analyse many files on a Dask cluster into one table (resumable)",
        description=(
            "Analyse every image among the inputs (files, folders searched recursively, glob "
            "patterns) with the same options as analyze, one Dask task per file, and write "
            "windows.parquet (one row per window, partitioned by file), files.csv (one row per "
            "file) and profile.csv (over defocus) into --out. Re-running resumes."
        ),
    )
    parser.add_argument(
        "inputs", nargs="+", metavar="INPUT", help="image files, folders or glob patterns"
    )
    parser.add_argument(
        "--glob",
        default=None,
        metavar="PATTERN",
        help="file-name pattern for folders, e.g. '*.dm4' (default: every supported extension)",
    )
    add_analysis_options(parser)
    g = parser.add_argument_group("model and cluster")
    g.add_argument(
        "--scheduler",
        default="local",
        metavar="local|processes|tcp://HOST:PORT",
        help="local (default) or processes: a LocalCluster here; tcp://HOST:PORT: a running "
        "dask-scheduler",
    )
    g.add_argument(
        "--workers",
        type=positive_int("--workers", unit="processes"),
        default=None,
        metavar="N",
        help="worker processes of the local cluster (default: the CPUs available here)",
    )
    g.add_argument(
        "--weights",
        default=None,
        metavar="PT",
        help="U-Net weights (default models/unet_spots.pt)",
    )
    g.add_argument(
        "--file-timeout",
        type=seconds_arg("--file-timeout"),
        default=None,
        metavar="S",
        help="seconds one file may take (default 600); a file past it is recorded in files.csv "
        "as timed out and the batch goes on",
    )
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder (created)")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Run ``batch``; return the exit code (2 when any file failed, after writing the rest)."""
    from hrtem_core.batch import DEFAULT_FILE_TIMEOUT_S, discover_files, make_settings, run_batch

    files = discover_files(args.inputs, glob=args.glob)  # bad inputs fail before the cluster
    settings = make_settings(
        params_from_args(args),
        pixel_size_nm=pixel_size_from_args(args),
        frame=args.frame,
        cards_path=args.cards,
        weights_path=args.weights,
        distortion=args.distortion,
    )
    with ProgressBar(
        total=float(len(files)), desc="batch", unit="file", enabled=not args.no_progress
    ) as bar:
        result = run_batch(
            files,
            settings=settings,
            out_dir=args.out,
            scheduler=args.scheduler,
            workers=args.workers,
            progress=bar,
            file_timeout_s=getattr(args, "file_timeout", None) or DEFAULT_FILE_TIMEOUT_S,
        )
    for w in result.warnings:
        sys.stderr.write(f"warning: {w}\n")
    report = {
        "out_dir": str(result.out_dir),
        "n_files": result.n_files,
        "n_analysed": result.n_analysed,
        "n_skipped": result.n_skipped,
        "n_failed": result.n_failed,
        "elapsed_s": round(result.elapsed_s, 3),
        "scheduler": result.scheduler,
        "n_workers": result.n_workers,
        "files_csv": str(result.files_path),
        "windows": str(result.windows_path),
        "profile_csv": None if result.profile_path is None else str(result.profile_path),
        "best_focus_nm": result.best_focus_nm,
    }
    sys.stdout.write(json.dumps(report) + "\n")
    return 2 if result.n_failed else 0

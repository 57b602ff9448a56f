"""The ``recsae`` command: ``datasets``, ``stats``, ``fetch`` and ``book``."""

from __future__ import annotations

import argparse
import json
import sys

__all__ = ["main"]


def _cmd_datasets(args: argparse.Namespace) -> int:
    from .data.registry import DATASETS, candidate_dirs, locate

    for name, spec in DATASETS.items():
        folder, how = locate(name)
        print(f"{name:<14} {spec.title}")
        print(f"{'':<14} {spec.description}")
        if folder is not None:
            print(f"{'':<14} found: {folder} ({how})")
        else:
            print(f"{'':<14} not found: {how}")
            if spec.url:
                where = candidate_dirs(spec)[-1][1]
                print(f"{'':<14} would be downloaded from {spec.url} into {where}")
            else:
                print(
                    f"{'':<14} cannot be downloaded: built from public copies (see shared/datasets SOURCE.md)"
                )
        print(f"{'':<14} terms: {spec.licence}")
    return 0


def _cmd_stats(args: argparse.Namespace) -> int:
    from .data.stats import dataset_stats

    stats = dataset_stats(args.name, args.data_dir)
    if args.json:
        print(json.dumps(stats, indent=2))
    else:
        width = max(map(len, stats))
        for k, v in stats.items():
            v = (
                f"{v:,}"
                if isinstance(v, int) and not isinstance(v, bool)
                else (f"{v:.6g}" if isinstance(v, float) else v)
            )
            print(f"{k:<{width}}  {v}")
    return 0


def _cmd_fetch(args: argparse.Namespace) -> int:
    from .data.download import fetch_dataset

    print(fetch_dataset(args.name, root=args.root))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``recsae`` command."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "book":
        from .book import main as book_main

        return book_main(argv[1:])
    p = argparse.ArgumentParser(
        prog="recsae", description="recsae: sparse autoencoders for recommender systems"
    )
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("datasets", help="list the known datasets and where each was found or would come from")
    s = sub.add_parser("stats", help="print a dataset's statistics")
    s.add_argument("name")
    s.add_argument("--json", action="store_true", help="print JSON")
    s.add_argument("--data-dir", default=None, help="folder holding the dataset's files")
    f = sub.add_parser("fetch", help="download a dataset's official archive into the user cache (checked)")
    f.add_argument("name")
    f.add_argument("--root", default=None, help="folder to unpack into (default: the user cache)")
    sub.add_parser("book", help="execute the chapters and build the book (recsae book --help)")
    args = p.parse_args(argv)
    from .errors import RecsaeError

    try:
        return {"datasets": _cmd_datasets, "stats": _cmd_stats, "fetch": _cmd_fetch}[args.cmd](args)
    except (RecsaeError, KeyError) as e:
        print(f"recsae: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

"""CLI sub-commands: each module exposes ``add_parser(subparsers)`` and ``run(args) -> int``.

``add_parser`` must call ``parser.set_defaults(func=run)``. Progress bars go to stderr (tqdm);
machine-readable output goes to stdout or to files.
"""

"""``python -m hrtem_core cards import FILE.cif [--card-id ID] [--source TEXT] [--cards XLSX]``.

Adds the phase of a CIF to the card database (:mod:`hrtem_core.cif`): cell, space group,
reflections with their extinctions and kinematic electron intensities. The card goes through the
database's validation and is written with the atomic save (:func:`hrtem_core.cards.save_cards`:
lock, digest check, ``.bak`` copy, ``os.replace``). Prints one line saying what was added. Bad
input: exit code 2 and one line ``error: ...`` on stderr (see :mod:`hrtem_core.cli`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the ``cards`` sub-command (with its action ``import``)."""
    parser = sub.add_parser(
        "cards",
        help="manage the PDF card database (import a CIF)",
        description="Manage the PDF card database.",
    )
    actions = parser.add_subparsers(
        dest="cards_action", metavar="ACTION", parser_class=type(parser)
    )
    actions.required = True
    imp = actions.add_parser(
        "import",
        help="add the phase of a CIF file to the card database",
        description=(
            "Read a CIF (cell, space group, atom sites), compute its reflections (d >= 1 A) with "
            "their extinctions and kinematic electron intensities, and add the phase to the card "
            "database (validated, saved atomically with a .bak copy)."
        ),
    )
    imp.add_argument("file", help="the CIF file")
    imp.add_argument(
        "--card-id",
        default=None,
        metavar="ID",
        help="card id (default: the CIF's database code, else its data block name)",
    )
    imp.add_argument(
        "--source",
        default=None,
        metavar="TEXT",
        help="source text (default: CIF file name, formula and journal reference)",
    )
    imp.add_argument(
        "--cards",
        default=None,
        metavar="XLSX",
        help="PDF card database to add to (default data/pdf_cards.xlsx)",
    )
    imp.add_argument(
        "--disable",
        action="store_true",
        help="add the phase with enabled = FALSE (left out of indexing by default)",
    )
    imp.add_argument(
        "--replace",
        action="store_true",
        help="replace a phase with the same card id (default: refuse)",
    )
    imp.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Import ``args.file`` into the card database; print one summary line; return 0."""
    from hrtem_core.cards import DEFAULT_CARDS_PATH, load_cards, save_cards
    from hrtem_core.cif import import_cif

    path = Path(args.cards) if args.cards else DEFAULT_CARDS_PATH
    db = load_cards(path)
    new_db, phase = import_cif(
        db,
        Path(args.file),
        replace=bool(args.replace),
        card_id=args.card_id,
        source=args.source,
        enabled=not args.disable,
    )
    digest = save_cards(new_db, path, expected_digest=db.digest)
    allowed = [r for r in phase.reflections if not r.forbidden]
    top = max(allowed, key=lambda r: r.intensity_rel or 0.0)
    sys.stdout.write(
        f"added card {phase.card_id} ({phase.name}, {phase.space_group}, "
        f"{len(phase.reflections)} reflections, strongest ({' '.join(map(str, top.hkl))}) "
        f"d = {top.d_nm * 10:.4f} A) to {path} (sha256 {digest[:12]})\n"
    )
    return 0


__all__ = ["add_parser", "run"]

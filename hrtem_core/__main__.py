"""``python -m hrtem_core``: the command-line interface."""

from hrtem_core.cli import main

raise SystemExit(main())

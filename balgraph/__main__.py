"""``python -m balgraph``: the command line (see :mod:`balgraph.cli`)."""

from .cli import main

raise SystemExit(main())

"""``python -m engine`` is the ``courier`` command."""

from engine.cli import main

raise SystemExit(main())

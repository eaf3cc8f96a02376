"""`python -m collector` is the `capacityd` command."""

from collector.app.cli import main

raise SystemExit(main())

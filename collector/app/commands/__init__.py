"""Sub-commands of `capacityd`, one module each (see collector/app/cli.py)."""

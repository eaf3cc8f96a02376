"""Sub-commands of `capacityd`, one module each (see collector/cli.py)."""

"""History: the store every normalised poll is written to and every analysis reads from (docs/history.md)."""

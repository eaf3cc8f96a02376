"""The daemon's log line, shared by the CLI and the analysis worker (both write it to stderr: the journal)."""

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

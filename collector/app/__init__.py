"""The application: config composition, daemon, scheduler and CLI — the only layer that wires the others together."""

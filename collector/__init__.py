"""capacityd's collector side: config, sources, the frame schema, scheduling, history, headroom and forecasts."""

__version__ = "0.1.0"

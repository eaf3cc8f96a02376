"""Prometheus exposition: the core custom collector, metric families of each analysis, and the HTTP server."""

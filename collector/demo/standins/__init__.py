"""Faithful loopback stand-ins of the OpenStack and Kubernetes APIs, for the demo estate, tests and benchmarks.

Nothing outside `collector.demo`, `tests/` and `bench/` imports them (an import contract checks it).
"""

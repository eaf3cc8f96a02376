"""Analyses: derived frames computed from the estate and its history (headroom, forecasts, report figures).

Each analysis registers with `collector.analyses.registry`; exporters render what they produce.
"""

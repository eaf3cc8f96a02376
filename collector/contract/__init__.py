"""The bottom layer: what every other package agrees on.

The frame schema (`schema`), units and Kubernetes quantities (`quantity`) and the typed-settings base
(`settings`). Nothing here imports any other capacityd package.
"""

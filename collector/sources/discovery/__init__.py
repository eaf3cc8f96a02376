"""Target discovery (issue 16, docs/discovery.md): where a source's many targets come from.

A producer turns an inventory into `Target`s: `nova.targets_from_frames` reads the hypervisor list an
OpenStack source already polled (handed in by the app through a callable: sources never import the
estate), `file_sd.FileSD` reads Prometheus `file_sd_configs` files. `fleet.TargetFleet` keeps the
lifecycle (new, disabled, gone) and one long-lived Source per target; the per-target schedule lives
in collector/app/targets.py.
"""

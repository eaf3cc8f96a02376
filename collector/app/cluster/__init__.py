"""Scale-out coordination (issue 13): shard ownership, Lease membership, planner leader election, roles.

Everything here coordinates through engines operators already run (Kubernetes Lease objects, or a
static `--shard i --total-shards N` like kube-state-metrics); there is no home-made cluster protocol.
"""

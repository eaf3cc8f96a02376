"""`capacityd run --role/--shard/--total-shards` (docs/cli.md): flags override the `cluster:` config keys."""

from __future__ import annotations

import argparse
from typing import Any

from collector.contract.settings import ConfigError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("scale-out (docs/scale-out.md)")
    group.add_argument("--role", choices=("all", "collector", "planner"), help="overrides cluster.role")
    group.add_argument("--shard", type=int, help="this collector's shard, 0..N-1 (overrides cluster.shard)")
    group.add_argument("--total-shards", type=int, help="number of shards N (overrides cluster.total_shards)")


def apply_arguments(config: Any, args: argparse.Namespace, path: str = "<command line>") -> Any:
    """The config with the flags given on the command line applied; ConfigError names a bad combination."""
    from pydantic import ValidationError

    from collector.app.cluster.settings import ClusterConfig

    overrides = {
        key: value
        for key, value in (("role", args.role), ("shard", args.shard), ("total_shards", args.total_shards))
        if value is not None
    }
    if not overrides:
        return config
    try:
        cluster = ClusterConfig.model_validate({**config.cluster.model_dump(), **overrides})
    except ValidationError as error:
        raise ConfigError(
            path,
            [
                f"--{str(e['loc'][0]).replace('_', '-') if e['loc'] else 'shard'}: "
                + e["msg"].removeprefix("Value error, ").replace("total_shards", "--total-shards")
                for e in error.errors(include_input=False, include_url=False)
            ],
        ) from None
    return config.model_copy(update={"cluster": cluster})

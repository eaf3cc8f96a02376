"""The `kind: openstack` source: one cloud (one clouds.yaml entry and region) per configured source."""

from __future__ import annotations

import logging
from collections import Counter
from datetime import datetime
from typing import Any

from collector.sources.base import PollResult, Source, SourceError
from collector.sources.openstack.client import OpenStackClient, RetryPolicy, make_connector
from collector.sources.openstack.frames import build_frames, flavor_request
from collector.sources.openstack.nova import NovaReader
from collector.sources.openstack.placement import PlacementReader

log = logging.getLogger(__name__)


class OpenStackSource(Source):
    """Reads Placement (capacity, usage, traits) and Nova (hosts, servers, flavors, aggregates)."""

    kind = "openstack"

    def __init__(self, config: Any, connect: Any = None, retry: RetryPolicy | None = None, sleep: Any = None):
        super().__init__(config)
        self.cloud = config.label or config.cloud or config.region or "default"
        timeout = config.effective_timeout.total_seconds()
        connector = connect or make_connector(config.cloud, config.region, config.clouds_yaml, timeout)
        kwargs = {"sleep": sleep} if sleep is not None else {}
        self.client = OpenStackClient(
            self.cloud, connector, retry=retry, max_response_bytes=int(config.max_response_size), **kwargs
        )
        self.placement = PlacementReader(self.client, concurrency=config.concurrency)
        self.nova = NovaReader(
            self.client,
            page_size=config.page_size,
            quotas=config.quotas,
            quotas_interval=config.quotas_interval.total_seconds(),
        )
        self.polls = 0

    def poll(self, now: datetime) -> PollResult:
        self.client.begin_poll(self.config.effective_poll_deadline.total_seconds())
        try:
            nova = self.nova.read()
            flavor_traits = {
                t
                for f in nova.flavors.values()
                for t in (*flavor_request(f).required_traits, *flavor_request(f).forbidden_traits)
            }
            placement = self.placement.read(flavor_traits)
        except SourceError as error:
            self._forget_on(error)
            # Name the cloud once, even when the message came from a parser that does not know it.
            if f"cloud {self.cloud}" not in str(error):
                raise SourceError(error.reason, f"cloud {self.cloud}: {error}") from None
            raise
        self.polls += 1
        frames = build_frames(
            source=self.name,
            cloud=self.cloud,
            now=now,
            placement=placement,
            nova=nova,
            default_zone=self.config.default_zone,
        )
        skipped: Counter[str] = Counter()
        skipped.update(placement.skipped)
        skipped.update(nova.skipped)
        return PollResult(
            frames=frames,
            skipped=skipped,
            api_calls=self.client.calls,
            notes=[*nova.notes, *placement.notes],
        )

    def _forget_on(self, error: SourceError) -> None:
        """After auth or transport trouble start the next poll on a fresh connection and empty caches."""
        # A body left unread (too large, cut off, deadline) has already closed its connection.
        if error.reason in {"auth_failed", "unreachable", "timeout", "discovery", "config"}:
            self.client.close()
            self.placement.reset()

    def close(self) -> None:
        self.client.close()

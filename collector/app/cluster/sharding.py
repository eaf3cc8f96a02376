"""Which collector owns which target: rendezvous (highest-random-weight) hashing.

A target's identity is a plain string (a configured source's name today; a discovered target's key
from fleet discovery later). Every member computes the same answer from the same member set without
talking to the others, and when one member joins or leaves only ~1/N of the targets change owner
(modulo hashing, Prometheus' `hashmod`, would move ~(N-1)/N of them).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence

_ORDINAL = re.compile(r"^(?P<set>.+)-(?P<ordinal>\d+)$")


def weight(member: str, target: str) -> int:
    """The member's score for a target: a stable 64-bit hash (same on every host and Python run)."""
    digest = hashlib.blake2b(f"{member}\x00{target}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def owner(target: str, members: Sequence[str]) -> str:
    """The one member owning `target`: the highest weight, ties broken by member name."""
    if not members:
        raise ValueError("no shard members: cannot assign targets to an empty shard set")
    return max(members, key=lambda member: (weight(member, target), member))


def assign(targets: Iterable[str], members: Sequence[str]) -> dict[str, str]:
    """target -> owning member, for every target."""
    unique = sorted(set(members))
    return {target: owner(target, unique) for target in targets}


def static_members(total_shards: int) -> list[str]:
    """The member names of a static shard set: "0" .. "N-1" (kube-state-metrics' --total-shards)."""
    if total_shards < 1:
        raise ValueError(f"total_shards must be at least 1, got {total_shards}")
    return [str(i) for i in range(total_shards)]


def ordinal_from_hostname(hostname: str) -> int:
    """A StatefulSet pod's ordinal from its hostname (`capacityd-collector-3` -> 3).

    Raises ValueError naming the hostname when it does not end in `-<number>`.
    """
    match = _ORDINAL.match(hostname.split(".", 1)[0])
    if match is None:
        raise ValueError(
            f"hostname {hostname!r} does not end in -<ordinal>; membership 'ordinal' needs a StatefulSet pod name"
        )
    return int(match.group("ordinal"))

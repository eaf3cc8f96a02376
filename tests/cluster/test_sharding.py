"""Rendezvous hashing properties (hypothesis): one owner per target, minimal movement on membership change."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from collector.app.cluster.sharding import assign, ordinal_from_hostname, owner, static_members

members_st = st.lists(st.text(min_size=1, max_size=12), min_size=1, max_size=12, unique=True)
targets_st = st.lists(st.text(min_size=1, max_size=30), min_size=1, max_size=200, unique=True)


@given(members_st, targets_st)
def test_every_target_has_exactly_one_owner_in_the_set(members: list[str], targets: list[str]) -> None:
    owners = assign(targets, members)
    assert set(owners) == set(targets)
    assert set(owners.values()) <= set(members)
    # every member, computing on its own with the members in any order, agrees with the others
    for target in targets:
        claims = [m for m in members if owner(target, list(reversed(members))) == m]
        assert claims == [owners[target]]


@given(members_st, targets_st, st.text(min_size=1, max_size=12))
def test_adding_a_member_moves_targets_only_to_it(members: list[str], targets: list[str], new: str) -> None:
    if new in members:
        return
    before, after = assign(targets, members), assign(targets, [*members, new])
    assert all(after[t] == new for t in targets if after[t] != before[t])


@given(members_st.filter(lambda m: len(m) > 1), targets_st, st.data())
def test_removing_a_member_moves_only_its_own_targets(
    members: list[str], targets: list[str], data: st.DataObject
) -> None:
    gone = data.draw(st.sampled_from(members))
    before = assign(targets, members)
    after = assign(targets, [m for m in members if m != gone])
    assert {t for t in targets if after[t] != before[t]} == {t for t in targets if before[t] == gone}


@settings(max_examples=10, deadline=None)
@given(st.integers(min_value=2, max_value=8))
def test_one_more_shard_moves_about_one_nth(total: int) -> None:
    targets = [f"hypervisor-{i}.example" for i in range(4000)]
    before, after = assign(targets, static_members(total)), assign(targets, static_members(total + 1))
    moved = sum(before[t] != after[t] for t in targets) / len(targets)
    assert moved == pytest.approx(1 / (total + 1), abs=0.03)  # modulo hashing would move ~total/(total+1)
    counts = [list(after.values()).count(m) for m in static_members(total + 1)]
    assert max(counts) < 1.25 * len(targets) / (total + 1)  # and the load stays balanced


def test_ordinal_from_statefulset_hostname() -> None:
    assert ordinal_from_hostname("capacityd-collector-3") == 3
    assert ordinal_from_hostname("capacityd-0.capacityd.monitoring.svc") == 0
    with pytest.raises(ValueError, match="does not end in -<ordinal>"):
        ordinal_from_hostname("collector")


def test_an_empty_shard_set_is_refused() -> None:
    with pytest.raises(ValueError, match="empty shard set"):
        owner("t", [])

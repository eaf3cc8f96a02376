"""N+1: what is left after losing the host (or zone) whose loss hurts most, with its load re-placed.

Subtracting a host's free capacity is not N+1: its VMs or pods must go somewhere, and where they
land, they take room the headroom counted. So for every failure candidate in a pool we:

1. take the candidate's hosts away,
2. re-place the consumers they held on the surviving, schedulable hosts of the pool, first-fit
   decreasing (largest consumers first, each on the first host in name order where it fits and its
   constraints - traits, aggregates, tenant isolation, taints - allow it), as an evacuation would,
3. count what could not be placed (shortfall) and the slots left per shape on the survivors.

Each shape's N+1 is its fewest slots over all candidates (its `failure_domain`, ties to the first
name); the shortfall is the most homeless over all candidates, reported apart; a candidate that strands
consumers leaves 0 slots of every shape.

Cost: consumers are grouped into classes of identical request and constraints
(collector.analyses.headroom.shapes). `replace_consumers` (what-if) fills hosts in order per class with one
cumulative sum. For N+1, `_Evacuation` precomputes where each class fits today, so a candidate's
re-placement walks a few hosts per displaced class; only the hosts that received consumers are
recounted and the pool totals are updated incrementally. Candidates whose displaced classes each land
whole on their first fitting survivor are evaluated together with numpy; so are those whose load spills
over several survivors within each class's first FRONT fitting hosts (a lockstep first-fit over all
candidates, `_front_receivers`); of the rest, those whose upper
bound of lost slots cannot beat the worst found, and whose load one survivor could take whole, are
skipped (exactly: a property test compares with the brute force).

Over 500 lines on purpose: the fast paths, the bounds and the exact fallback must agree to the unit with the brute
force, and are proven against it together (tests/headroom/test_n_plus_one_properties.py).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from collector.analyses.headroom.model import EPSILON, HostTable, SlotResult, widen
from collector.analyses.headroom.shapes import ConsumerClasses, ShapeSet


@dataclass
class FailureResult:
    slots_after: np.ndarray
    """(S,) for each shape, the fewest slots left after any single failure of the pool."""
    domain: list[str | None]
    """(S,) the host or zone whose loss leaves the shape the fewest slots (first name on ties)."""
    shortfall: np.ndarray
    """(S,) the most consumers any single failure of the pool leaves without a home (same for every shape)."""
    shortfall_domain: str | None = None
    """The failure that leaves the most consumers homeless (first name on ties); None when none does."""
    evaluated: int = 0
    """Failure candidates actually evaluated (the rest were proven unable to change the answer)."""
    at_once: int = 0
    """Of those, how many were evaluated together (one receiving host each, vectorised)."""


@dataclass
class Replacement:
    """The outcome of re-placing displaced consumers: per class and host, how many landed where."""

    placed: dict[int, np.ndarray]
    """class -> (H,) how many of its consumers landed on each host (classes that moved only)."""
    unplaced: np.ndarray
    """(K,)"""
    free: np.ndarray
    """(H, R) free capacity after the re-placement."""
    shared_free: dict[tuple[str, str], float]

    def placed_matrix(self, classes: int) -> np.ndarray:
        """(K, H) dense `placed`: for small estates and tests only."""
        matrix = np.zeros((classes, self.free.shape[0]), dtype=np.int64)
        for k, row in self.placed.items():
            matrix[k] = row
        return matrix


def class_order(table: HostTable, requests: np.ndarray) -> np.ndarray:
    """Largest first: by the dominant share of the average active host's allocatable (as binpackers do)."""
    active = table.active if table.active.any() else np.ones(table.size, dtype=bool)
    scale = table.allocatable[active].mean(axis=0) if table.size else np.ones(requests.shape[1])
    scale = np.where(scale > 0, scale, np.inf)
    share = (requests / scale[None, :]).max(axis=1) if requests.size else np.zeros(len(requests))
    return np.argsort(-share, kind="stable")


def replace_consumers(
    table: HostTable,
    classes: ConsumerClasses,
    displaced: np.ndarray,
    targets: np.ndarray,
    free: np.ndarray | None = None,
    order: np.ndarray | None = None,
) -> Replacement:
    """First-fit decreasing of `displaced[k]` consumers of each class onto the `targets` hosts.

    A resource a target host draws from a pool-level provider is not re-checked when the consumer
    stays in its pool (its allocation there moves with it); moving to another pool charges that
    pool's provider. Never puts more on a host than its free capacity and max_unit allow.
    """
    requests = widen(classes.requests, len(table.resources))
    free = (table.free if free is None else free).copy()
    shared_free = {key: provider.free for key, provider in table.shared_providers.items()}
    placed: dict[int, np.ndarray] = {}
    unplaced = np.zeros(len(classes), dtype=np.int64)
    order = class_order(table, requests) if order is None else order
    for k in order:
        wanted = int(displaced[k])
        if wanted <= 0:
            continue
        q = requests[k]
        allowed = classes.eligible_of(k) & targets & table.active
        landed = placed.setdefault(int(k), np.zeros(table.size, dtype=np.int64))
        while wanted > 0 and allowed.any():
            fit = _fit(table, q, free, allowed)
            fit = np.minimum(fit, wanted)
            before = np.cumsum(fit) - fit
            take = np.clip(wanted - before, 0, fit).astype(np.int64)
            capped_pool = _charge_other_pools(table, q, take, classes.pools[k], shared_free)
            landed += take
            wanted -= int(take.sum())
            local = ~table.shared
            free -= take[:, None] * np.where(local, q[None, :], 0.0)
            if capped_pool is None:
                break
            allowed &= table.pools != capped_pool
        unplaced[k] = wanted
    return Replacement(placed, unplaced, free, shared_free)


def _fit(table: HostTable, q: np.ndarray, free: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    """How many consumers of request `q` fit on each host (inf where only pool providers bound it)."""
    result = np.where(allowed, np.inf, 0.0)
    for r in np.flatnonzero(q > 0):
        amount = q[r]
        admissible = (amount <= table.max_unit[:, r] * (1 + EPSILON)) & (amount >= table.min_unit[:, r] - EPSILON)
        count = np.where(table.present[:, r] & admissible, np.floor(free[:, r] / amount + EPSILON), 0.0)
        count = np.where(table.shared[:, r], np.inf, count)
        result = np.minimum(result, count)
    return np.where(np.isinf(result), np.iinfo(np.int32).max, result)


def _charge_other_pools(
    table: HostTable, q: np.ndarray, take: np.ndarray, home_pool: str, shared_free: dict[tuple[str, str], float]
) -> str | None:
    """Charge pool-level providers of pools other than home; trim `take` where one runs out.

    Returns the pool that ran out (its hosts are then skipped), or None.
    """
    for r in np.flatnonzero(q > 0):
        movers = table.shared[:, r] & (table.pools != home_pool) & (take > 0)
        if not movers.any():
            continue
        for pool in np.unique(table.pools[movers]):
            key = (str(pool), table.resources[r])
            in_pool = movers & (table.pools == pool)
            capacity = math.floor(shared_free.get(key, 0.0) / q[r] + EPSILON)
            wanted = int(take[in_pool].sum())
            if wanted > capacity:
                excess = wanted - capacity
                for h in np.flatnonzero(in_pool)[::-1]:
                    cut = min(excess, int(take[h]))
                    take[h] -= cut
                    excess -= cut
                    if not excess:
                        break
                shared_free[key] = shared_free.get(key, 0.0) - capacity * q[r]
                return str(pool)
            shared_free[key] = shared_free.get(key, 0.0) - wanted * q[r]
    return None


class _PoolSums:
    """Per-pool sums of slots (local and via pool providers) for incremental totals under a mask."""

    def __init__(self, table: HostTable, shapes: ShapeSet, result: SlotResult, mask: np.ndarray):
        self.table = table
        self.requests = widen(shapes.requests, len(table.resources))
        self.pool_names, self.pool_of = np.unique(table.pools, return_inverse=True)
        self.mask = mask
        p = len(self.pool_names)
        s = len(shapes)
        slots = np.where(mask[None, :], result.slots, 0.0)
        shared = result.uses_shared
        self.shared = shared
        self.local = np.zeros((s, p))
        self.via = np.zeros((s, p))
        np.add.at(self.local.T, self.pool_of, np.where(shared, 0.0, slots).T)
        finite = np.where(np.isinf(slots), 0.0, slots)
        np.add.at(self.via.T, self.pool_of, np.where(shared, finite, 0.0).T)
        self.bounds = np.full((s, p), np.inf)
        for j, pool in enumerate(self.pool_names):
            if shared[:, self.pool_of == j].any():
                for k in range(s):
                    self.bounds[k, j] = table.shared_bound(str(pool), self.requests[k])

    def totals(self, local: np.ndarray, via: np.ndarray, bounds: np.ndarray | None = None) -> np.ndarray:
        bounds = self.bounds if bounds is None else bounds
        result: np.ndarray = (local + np.minimum(via, bounds)).sum(axis=1)
        return result

    def delta(self, hosts: np.ndarray, old: np.ndarray, new: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Pool sums after slots on `hosts` change from old (S, n) to new (S, n)."""
        local, via = self.local.copy(), self.via.copy()
        if len(hosts):
            change = np.where(np.isinf(new), 0.0, new) - np.where(np.isinf(old), 0.0, old)
            shared = self.shared[:, hosts]
            pools = self.pool_of[hosts]
            np.add.at(local.T, pools, np.where(shared, 0.0, change).T)
            np.add.at(via.T, pools, np.where(shared, change, 0.0).T)
        return local, via


class _Evacuation:
    """First-fit decreasing re-placement, precomputed for many failure candidates of one pool.

    Placing consumers only lowers free capacity, so a host where a class did not fit before (with
    today's free capacity) never fits during a re-placement, and only the few hosts that received
    consumers need recomputing. A re-placement therefore walks each displaced class's fitting hosts
    in name order and usually stops after one or two: O(displaced classes) instead of O(classes x
    hosts). Only each class's first FRONT + 1 fitting hosts are kept (`heads`); a walk that goes
    further scans on in blocks. Memory is O(classes x FRONT + block), never classes x hosts.
    """

    BLOCK = 64
    COLUMNS = 2048
    """Fit is computed for at most BLOCK classes x COLUMNS hosts at a time."""

    def __init__(self, table: HostTable, classes: ConsumerClasses, mask: np.ndarray):
        self.table = table
        self.requests = widen(classes.requests, len(table.resources))
        self.free = table.free
        self.local = ~table.shared
        self.pools = table.pools
        self.home = classes.pools
        k_count = len(classes)
        self.rank = np.empty(k_count, dtype=np.int64)
        self.rank[class_order(table, self.requests)] = np.arange(k_count)
        # Only classes held on the pool's hosts can be displaced; only its active hosts take them.
        self.columns = np.flatnonzero(table.active & mask)
        self.column_of = np.full(table.size, -1, dtype=np.int64)
        self.column_of[self.columns] = np.arange(len(self.columns))
        relevant = np.unique(classes.held_class[mask[classes.held_host]]) if k_count else np.zeros(0, np.int64)
        self.relevant = relevant
        self.row_of = np.full(k_count, -1, dtype=np.int64)
        self.row_of[relevant] = np.arange(len(relevant))
        self.classes = classes
        self.heads, self.head_len = self._heads(relevant, FRONT + 1)
        self.first_targets = self.heads[:, 0].copy()
        self.second_targets = self.heads[:, 1].copy()
        self.prepared = False

    def fit(self, ks: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """(len(ks), len(cols)) how many consumers of classes `ks` fit on columns `cols` today (0: ineligible)."""
        table = self.table
        hosts = self.columns[cols]
        fit = np.full((len(ks), len(hosts)), np.inf)
        for r in range(self.requests.shape[1]):
            q = self.requests[ks, r][:, None]
            asked = q > 0
            if not asked.any():
                continue
            admissible = (q <= table.max_unit[None, hosts, r] * (1 + EPSILON)) & (
                q >= table.min_unit[None, hosts, r] - EPSILON
            )
            with np.errstate(divide="ignore", invalid="ignore"):
                count = np.floor(self.free[None, hosts, r] / q + EPSILON)
            count = np.where(table.present[None, hosts, r] & admissible, count, 0.0)
            count = np.where(table.shared[None, hosts, r], np.inf, count)
            fit = np.where(asked, np.minimum(fit, count), fit)
        fit = np.where(self.classes.eligible_block(ks, hosts), fit, 0.0)
        result: np.ndarray = np.minimum(fit, _BIG).astype(np.int64)
        return result

    def _heads(self, ks: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
        """Each class's first `width` fitting hosts in name order (-1 padded), and how many it has.

        Scans columns in blocks from the first host the class's constraints allow, and stops for a
        class once it has `width`: a class that fits on most hosts costs one block, not the pool.
        """
        heads = np.full((len(ks), max(width, 2)), -1, dtype=np.int64)
        found = np.zeros(len(ks), dtype=np.int64)
        c_count = len(self.columns)
        if not len(ks) or not c_count:
            return heads, found
        masks = self.classes.masks[:, self.columns]
        any_host = masks.any(axis=1)
        first_allowed = np.where(any_host, masks.argmax(axis=1), c_count)
        last_allowed = np.where(any_host, c_count - 1 - masks[:, ::-1].argmax(axis=1), -1)
        del masks
        starts = first_allowed[self.classes.mask_of[ks]]
        stops = last_allowed[self.classes.mask_of[ks]]
        # Classes whose hosts start near each other share blocks: a block scans from its first start.
        by_start = np.argsort(starts, kind="stable")
        for begin in range(0, len(ks), self.BLOCK):
            rows = by_start[begin : begin + self.BLOCK]
            cursor = int(starts[rows].min())
            while len(rows) and cursor < c_count:
                # no further than the last host any of these classes may use
                cols = np.arange(cursor, min(cursor + self.COLUMNS, c_count, int(stops[rows].max()) + 1))
                fits = self.fit(ks[rows], cols) > 0
                r_idx, c_idx = np.nonzero(fits)
                if len(r_idx):
                    per_row = np.bincount(r_idx, minlength=len(rows))
                    rank = np.arange(len(r_idx)) - np.repeat(np.cumsum(per_row) - per_row, per_row)
                    need = width - found[rows]
                    take = rank < need[r_idx]
                    target_rows = rows[r_idx[take]]
                    heads[target_rows, found[target_rows] + rank[take]] = self.columns[cols[c_idx[take]]]
                    found[rows] += np.minimum(per_row, need)
                cursor = int(cols[-1]) + 1
                rows = rows[(found[rows] < width) & (stops[rows] >= cursor)]  # past its last allowed host: done
                if len(rows):
                    cursor = max(cursor, int(starts[rows].min()))
        return heads, found

    def targets(self, k: int) -> Iterator[int]:
        """Class k's fitting hosts today, in name order: its head, then further blocks on demand."""
        row = self.row_of[k]
        length = int(self.head_len[row])
        yield from self.head_lists[row]
        if length < FRONT + 1:
            return  # the head holds every fitting host
        cursor = int(self.column_of[self.heads[row, length - 1]]) + 1
        ks = np.array([k], dtype=np.int64)
        while cursor < len(self.columns):
            cols = np.arange(cursor, min(cursor + self.COLUMNS, len(self.columns)))
            yield from self.columns[cols[self.fit(ks, cols)[0] > 0]].tolist()
            cursor = int(cols[-1]) + 1

    def _prepare(self) -> None:
        """What one-by-one re-placements need, built on first use (the vectorised path needs none of it)."""
        if self.prepared:
            return
        self.prepared = True
        table = self.table
        self.head_lists = [row[:n].tolist() for row, n in zip(self.heads, self.head_len.tolist(), strict=True)]
        self.rank_list = self.rank.tolist()
        # Plain Python rows and request lists: a re-placement touches a handful of tiny vectors, where
        # numpy's per-call overhead would dominate.
        self.free_rows = self.free.tolist()
        self.local_rows = self.local.tolist()
        self.asks = [[(r, float(q)) for r, q in enumerate(row) if q > 0] for row in self.requests.tolist()]
        self.pool_list = [str(p) for p in self.pools]
        self.home_list = [str(p) for p in self.home]
        self.shared_any: list[bool] = np.asarray(table.shared.any(axis=1), dtype=bool).tolist()

    def displaced(self, dead: np.ndarray) -> dict[int, int]:
        """Class -> consumers held on the `dead` hosts."""
        _, ks, counts = self.classes.held_on(dead)
        out: dict[int, int] = {}
        for k, n in zip(ks.tolist(), counts.tolist(), strict=True):
            out[k] = out.get(k, 0) + n
        return out

    def _fit_row(self, k: int, h: int, row: list[float]) -> int:
        local = self.local_rows[h]
        fit = _BIG
        for r, q in self.asks[k]:
            if local[r]:
                fit = min(fit, math.floor(row[r] / q + EPSILON))
        return fit

    def run(self, dead: np.ndarray) -> tuple[dict[int, list[float]], int, dict[tuple[str, str], float]]:
        """Re-place the consumers of `dead` hosts; returns (new free rows by host, homeless, shared free)."""
        self._prepare()
        displaced = self.displaced(dead)
        dead_set = set(dead.tolist())
        changed: dict[int, list[float]] = {}
        shared_free: dict[tuple[str, str], float] = {}
        homeless = 0
        rank = self.rank_list
        for k in sorted(displaced, key=rank.__getitem__):
            wanted = displaced[k]
            asks = self.asks[k]
            for h in self.targets(k):
                if h in dead_set:
                    continue
                row = changed.get(h)
                fit = self._fit_row(k, h, self.free_rows[h] if row is None else row)
                take = min(fit, wanted)
                if take <= 0:
                    continue
                if self.shared_any[h] and self.pool_list[h] != self.home_list[k]:
                    take = self._charge(k, h, take, shared_free)
                    if take <= 0:
                        continue
                new = list(self.free_rows[h] if row is None else row)
                local = self.local_rows[h]
                for r, q in asks:
                    if local[r]:
                        new[r] -= take * q
                changed[h] = new
                wanted -= take
                if not wanted:
                    break
            homeless += wanted
        return changed, homeless, shared_free

    def absorbable(self, dead: np.ndarray) -> bool:
        """True when one surviving host could take every consumer of `dead` (then FFD leaves none out)."""
        displaced = self.displaced(dead)
        if not displaced:
            return True
        ks = np.fromiter(displaced, dtype=np.int64)
        counts = np.fromiter(displaced.values(), dtype=float)
        ok = np.ones(len(self.columns), dtype=bool)
        for start in range(0, len(self.columns), self.COLUMNS):
            cols = np.arange(start, min(start + self.COLUMNS, len(self.columns)))
            ok[cols] = (self.fit(ks, cols) > 0).all(axis=0)
        ok &= ~np.isin(self.columns, dead)
        demand = counts @ self.requests[ks]
        local = self.local[self.columns]
        ok &= ((self.free[self.columns] - demand[None, :] * local) >= -EPSILON).all(axis=1)
        homes = set(self.home[ks].tolist())
        if self.table.shared_providers and (len(homes) > 1 or homes != {None}):
            same_pool = np.isin(self.pools[self.columns], list(homes)) if len(homes) == 1 else np.zeros_like(ok)
            ok &= ~self.table.shared[self.columns].any(axis=1) | same_pool
        return bool(ok.any())

    def _charge(self, k: int, h: int, take: int, shared_free: dict[tuple[str, str], float]) -> int:
        """Moving to another pool charges that pool's pool-level providers; trim to what they hold."""
        q = self.requests[k]
        for r in np.flatnonzero((q > 0) & self.table.shared[h]).tolist():
            key = (str(self.pools[h]), self.table.resources[r])
            left = shared_free.get(key, self.table.shared_providers[key].free)
            take = min(take, math.floor(left / q[r] + EPSILON))
        for r in np.flatnonzero((q > 0) & self.table.shared[h]).tolist():
            key = (str(self.pools[h]), self.table.resources[r])
            shared_free[key] = shared_free.get(key, self.table.shared_providers[key].free) - max(take, 0) * q[r]
        return take


_BIG = 2**31


def _slots_on(
    requests: np.ndarray, table: HostTable, hosts: np.ndarray, free: np.ndarray, before: np.ndarray
) -> np.ndarray:
    """(S, n) slots on a few hosts with new free rows; hosts where a shape had no slot keep none."""
    with np.errstate(divide="ignore", invalid="ignore"):
        counts = np.floor(free[None, :, :] / requests[:, None, :] + EPSILON)
    use = (requests[:, None, :] > 0) & ~table.shared[None, hosts, :]
    slots = np.where(use, counts, np.inf).min(axis=2)
    slots = np.where(np.isinf(before), before, np.minimum(slots, before))
    return np.where(before > 0, np.maximum(slots, 0.0), 0.0)


def n_plus_one(
    table: HostTable,
    shapes: ShapeSet,
    result: SlotResult,
    classes: ConsumerClasses,
    mask: np.ndarray,
    domain: str = "host",
    *,
    exhaustive: bool = False,
) -> FailureResult:
    """Per shape, the fewest slots left after any single failure of the pool `mask`; the most homeless.

    Each shape's N+1 is the minimum of its slots over all failure candidates (ties to the first name),
    and the shortfall, the most consumers any single failure leaves without a home, is reported on its
    own: one failure can strand a big VM while another takes the last slot of a small flavor. A failure
    that strands consumers leaves 0 slots of every shape (the homeless claim any room first), so a pool
    with a shortfall fails N+1 whatever its slots, and stranding one more consumer can never make N+1
    look better.

    `exhaustive` re-places every candidate's consumers one by one (the reference). Otherwise the answer
    is the same, computed faster: candidates whose displaced consumers all land on one host (each
    displaced class's first fitting survivor is that host, and it holds them all) are evaluated for the
    whole pool at once with numpy; the others are taken in order of an upper bound of the slots they
    can cost and skipped when that bound cannot lower any shape's minimum and none of their consumers
    can be left homeless (or not more than the worst shortfall found).
    """
    s_count = len(shapes)
    sums = _PoolSums(table, shapes, result, mask)
    before = sums.totals(sums.local, sums.via)
    if not mask.any():
        return FailureResult(before.copy(), [None] * s_count, np.zeros(s_count))
    requests = sums.requests
    evacuation = _Evacuation(table, classes, mask)
    shape_slots = np.where(mask[None, :], result.slots, 0.0)
    candidates = _candidates(table, shapes, result, classes, mask, domain)
    best = _Best(before, [name for name, _ in candidates])
    cross_pool_sharing = bool(table.shared_providers) and len(np.unique(table.pools[mask])) > 1

    def evaluate(i: int) -> None:
        dead = candidates[i][1]
        changed_rows, shortfall, shared_free = evacuation.run(dead)
        changed = np.array(sorted(changed_rows), dtype=np.int64)
        hosts = np.concatenate([dead, changed])
        old = shape_slots[:, hosts]
        new = np.zeros_like(old)
        if len(changed):
            free = np.array([changed_rows[h] for h in changed.tolist()])
            new[:, len(dead) :] = _slots_on(requests, table, changed, free, old[:, len(dead) :])
        local, via = sums.delta(hosts, old, new)
        bounds = _bounds_with(table, sums, shared_free) if shared_free else sums.bounds
        best.offer(i, sums.totals(local, via, bounds), float(shortfall))

    if exhaustive or cross_pool_sharing:
        for i in range(len(candidates)):
            evaluate(i)
        best.evaluated = len(candidates)
        return best.result(before)
    rest = _first_receivers(evacuation, candidates, shape_slots, requests, table, mask, before, best)
    rest = _front_receivers(evacuation, candidates, rest, shape_slots, requests, table, mask, before, best)
    bounds_ub = _loss_bounds([candidates[i] for i in rest], shape_slots, classes, evacuation.requests, requests)
    order = sorted(
        range(len(rest)), key=lambda j: (-float((bounds_ub[j] / (before + 1.0)).max(initial=0.0)), best.rank[rest[j]])
    )
    for j in order:
        i = rest[j]
        if best.seen and not best.could_lower(i, before - bounds_ub[j]):
            dead = candidates[i][1]
            if evacuation.absorbable(dead):
                continue  # no one can be left homeless, and the slots it can cost change nothing
            displaced = float(classes.held_total(dead))
            if not best.could_lower(i, np.zeros_like(before)) and not best.could_strand(i, displaced):
                continue
        evaluate(i)
        best.evaluated += 1
    return best.result(before)


class _Best:
    """Running answer: per shape the fewest slots left (and by which failure), the most homeless."""

    def __init__(self, before: np.ndarray, names: list[str]):
        self.names = names
        self.rank = np.empty(len(names), dtype=np.int64)
        self.rank[np.argsort(np.array(names, dtype=object), kind="stable")] = np.arange(len(names))
        self.after = np.full(len(before), np.inf)
        self.by = np.full(len(before), -1, dtype=np.int64)
        self.by_rank = np.full(len(before), np.iinfo(np.int64).max, dtype=np.int64)
        self.shortfall = 0.0
        self.shortfall_by = -1
        self.seen = False
        self.evaluated = 0
        self.at_once = 0

    def offer(self, i: int, after: np.ndarray, shortfall: float) -> None:
        self.seen = True
        if shortfall > 0:
            after = np.zeros_like(after)  # homeless consumers claim any room first: nothing is left
        rank = self.rank[i]
        better = (after < self.after) | ((after == self.after) & (rank < self.by_rank))
        self.after = np.where(better, after, self.after)
        self.by = np.where(better, i, self.by)
        self.by_rank = np.where(better, rank, self.by_rank)
        if shortfall > self.shortfall or (
            shortfall == self.shortfall and shortfall > 0 and rank < self.rank[self.shortfall_by]
        ):
            self.shortfall, self.shortfall_by = shortfall, i

    def offer_many(self, indices: np.ndarray, after: np.ndarray) -> None:
        """Candidates `indices` (no homeless) with slots left `after` (n, S), all at once."""
        if not len(indices):
            return
        self.seen = True
        ranks = self.rank[indices]
        for s in range(after.shape[1]):
            j = np.lexsort((ranks, after[:, s]))[0]
            if after[j, s] < self.after[s] or (after[j, s] == self.after[s] and ranks[j] < self.by_rank[s]):
                self.after[s], self.by[s], self.by_rank[s] = after[j, s], indices[j], ranks[j]

    def could_lower(self, i: int, lowest: np.ndarray) -> bool:
        """Could a failure leaving at least `lowest` slots per shape change any shape's answer?"""
        rank = self.rank[i]
        return bool(((lowest < self.after) | ((lowest == self.after) & (rank < self.by_rank))).any())

    def could_strand(self, i: int, most: float) -> bool:
        """Could a failure leaving at most `most` consumers homeless change the reported shortfall?"""
        if most <= 0:
            return False
        return most > self.shortfall or (most == self.shortfall and self.rank[i] < self.rank[self.shortfall_by])

    def result(self, before: np.ndarray) -> FailureResult:
        slots = np.where(self.by >= 0, self.after, before)
        domain = [self.names[i] if i >= 0 else None for i in self.by.tolist()]
        shortfall_domain = self.names[self.shortfall_by] if self.shortfall_by >= 0 else None
        return FailureResult(
            np.maximum(slots, 0.0),
            domain,
            np.full(len(before), self.shortfall),
            shortfall_domain,
            self.evaluated,
            self.at_once,
        )


def _first_receivers(
    evacuation: _Evacuation,
    candidates: list[tuple[str, np.ndarray]],
    shape_slots: np.ndarray,
    requests: np.ndarray,
    table: HostTable,
    mask: np.ndarray,
    before: np.ndarray,
    best: _Best,
) -> list[int]:
    """Evaluate, all at once, the candidates whose consumers each land on their class's first fitting host.

    For a lost host h, first-fit decreasing walks each displaced class's fitting hosts in name order;
    its first fitting host other than h is g_k. When every receiving host g has room for the whole
    request of the classes whose g_k is g (free(g) - their total request >= 0 in every resource), each
    class finds room on g_k in its turn whatever the order, so that is exactly where they all go and
    the survivors' slots change on those hosts only. Returns the indices of the other candidates
    (a receiver too small, zones, pool-level providers) to evaluate one by one.
    """
    single = [i for i, (_, dead) in enumerate(candidates) if len(dead) == 1]
    if not single or table.shared[mask].any():
        return list(range(len(candidates)))
    index = np.array(single, dtype=np.int64)
    hosts = np.array([int(candidates[i][1][0]) for i in single], dtype=np.int64)
    n, s_count = len(hosts), shape_slots.shape[0]
    fast = np.ones(n, dtype=bool)
    cost = np.zeros((n, s_count))  # slots the receivers lose, per candidate
    cs, ks, held = evacuation.classes.held_on(hosts)  # one entry per (candidate, class) it holds
    if len(ks):
        rows = evacuation.row_of[ks]
        first = evacuation.first_targets[rows]
        second = evacuation.second_targets[rows]
        g = np.where(first != hosts[cs], first, second)
        fast[cs[g < 0]] = False  # a class with nowhere else to go: one by one
        ok = g >= 0
        ks, cs, g, held = ks[ok], cs[ok], g[ok], held[ok]
        pairs, pair_of = np.unique(cs * table.size + g, return_inverse=True)
        pair_c, pair_g = pairs // table.size, pairs % table.size
        demand = np.zeros((len(pairs), requests.shape[1]))
        np.add.at(demand, pair_of, held[:, None] * evacuation.requests[ks])
        left = table.free[pair_g] - demand
        fits = (left >= 0).all(axis=1)
        fast[pair_c[~fits]] = False
        step = max(1, 2**21 // max(1, requests.size))  # (pairs, S, R) temporaries of ~16 MB at most
        for begin in range(0, len(pairs), step):
            part = slice(begin, begin + step)
            old_g = shape_slots[:, pair_g[part]].T  # (pairs, S)
            with np.errstate(divide="ignore", invalid="ignore"):
                counts_g = np.floor(left[part, None, :] / requests[None, :, :] + EPSILON)
            new_g = np.where(requests[None, :, :] > 0, counts_g, np.inf).min(axis=2)
            new_g = np.where(np.isinf(old_g), old_g, np.minimum(new_g, old_g))
            new_g = np.where(old_g > 0, np.maximum(new_g, 0.0), 0.0)
            np.add.at(cost, pair_c[part], old_g - new_g)
    after = before[None, :] - shape_slots[:, hosts].T - cost
    best.offer_many(index[fast], after[fast])
    best.evaluated += int(fast.sum())
    best.at_once = int(fast.sum())
    done = set(index[fast].tolist())
    return [i for i in range(len(candidates)) if i not in done]


FRONT = 16
"""How many of each class's first fitting hosts the lockstep re-placement (`_front_receivers`) follows."""


def _front_receivers(
    evacuation: _Evacuation,
    candidates: list[tuple[str, np.ndarray]],
    rest: list[int],
    shape_slots: np.ndarray,
    requests: np.ndarray,
    table: HostTable,
    mask: np.ndarray,
    before: np.ndarray,
    best: _Best,
    chunk: int = 1024,
) -> list[int]:
    """First-fit decreasing for many single-host candidates in lockstep, when the load spills over hosts.

    Each class's walk visits its fitting hosts (with today's free room: placing only lowers it)
    in name order. If every displaced class finds room for all its consumers among its first FRONT
    fitting hosts other than the lost one, the walk never leaves that prefix, so simulating the
    re-placement on the union of the prefixes (columns in name order, class k restricted to its own
    prefix) with per-candidate free rows is exactly what `_Evacuation.run` does. Classes are taken in
    the same rank order; per class, one cumulative sum over the prefix places every candidate at once.
    Candidates whose consumers outrun a prefix are returned to be evaluated one by one.
    """
    if not rest or table.shared[mask].any():
        return rest
    single = [i for i in rest if len(candidates[i][1]) == 1]
    if not single or not len(evacuation.relevant):
        return rest
    done: list[int] = []
    position = np.full(table.size, -1, dtype=np.int64)
    j_of = np.full(len(evacuation.classes), -1, dtype=np.int64)
    r_count = table.free.shape[1]
    free_all = table.free
    begin, size = 0, chunk
    while begin < len(single):
        index = np.array(single[begin : begin + size], dtype=np.int64)
        hosts = np.array([int(candidates[i][1][0]) for i in index.tolist()], dtype=np.int64)
        n = len(hosts)
        cs, ks, held = evacuation.classes.held_on(hosts)
        # Only the classes these candidates hold, and only their prefixes: memory per chunk, not per pool.
        present = np.unique(ks)
        present = present[np.argsort(evacuation.rank[present], kind="stable")]
        rows = evacuation.row_of[present]
        prefixes = [evacuation.heads[row, : evacuation.head_len[row]] for row in rows.tolist()]
        front = np.unique(np.concatenate(prefixes)) if prefixes else np.zeros(0, np.int64)
        if n > 16 and n * len(front) * r_count > 2**21:
            size = max(16, size // 2)  # the per-candidate free rows would pass ~16 MB: fewer at a time
            continue
        begin += n
        position[front] = np.arange(len(front))
        columns = [position[prefix] for prefix in prefixes]  # each class's prefix, in name order
        class_req = evacuation.requests[present]  # (K', R)
        local = ~table.shared[front]  # (F, R)
        old_front = shape_slots[:, front].T  # (F, S)
        j_of[present] = np.arange(len(present))
        # Per class (in rank order), the candidates holding it and how many: one sort of the pairs.
        by_class = np.lexsort((cs, j_of[ks]))
        pair_j, pair_c, pair_n = j_of[ks][by_class], cs[by_class], held[by_class]
        bounds = np.searchsorted(pair_j, np.arange(len(present) + 1))
        free = np.broadcast_to(free_all[front], (n, len(front), r_count)).copy()
        dead_pos = position[hosts]  # -1: the lost host is in no prefix of this chunk
        touched_c: list[np.ndarray] = []
        touched_f: list[np.ndarray] = []
        ok = np.ones(n, dtype=bool)
        for j in range(len(present)):
            who = pair_c[bounds[j] : bounds[j + 1]]
            want = pair_n[bounds[j] : bounds[j + 1]][:, None].astype(float)
            q = class_req[j]
            cols = columns[j]
            w, c = who[:, None], cols[None, :]
            sub = free[w, c]  # (w, c, R)
            fit = np.full((len(who), len(cols)), float(_BIG))
            for r in np.flatnonzero(q > 0).tolist():
                count = np.floor(sub[:, :, r] / q[r] + EPSILON)
                fit = np.minimum(fit, np.where(local[None, cols, r], count, float(_BIG)))
            alive = c != dead_pos[who][:, None]
            fit = np.where(alive, np.maximum(fit, 0.0), 0.0)
            fit = np.minimum(fit, want)
            placed_before = np.cumsum(fit, axis=1) - fit
            take = np.clip(want - placed_before, 0.0, fit)
            ok[who[take.sum(axis=1) < want[:, 0]]] = False
            free[w, c] = sub - take[:, :, None] * np.where(local[cols], q[None, :], 0.0)[None, :, :]
            tw, tf = np.nonzero(take > 0)
            touched_c.append(who[tw])
            touched_f.append(cols[tf])
        position[front] = -1
        touched = np.zeros((n, len(front)), dtype=bool)
        if touched_c:
            touched[np.concatenate(touched_c), np.concatenate(touched_f)] = True
        tc, tf = np.nonzero(touched)
        with np.errstate(divide="ignore", invalid="ignore"):
            counts = np.floor(free[tc, tf][:, None, :] / requests[None, :, :] + EPSILON)  # (P, S, R)
        use = (requests[None, :, :] > 0) & local[tf][:, None, :]
        new = np.where(use, counts, np.inf).min(axis=2)  # (P, S)
        old = old_front[tf]
        new = np.where(np.isinf(old), old, np.minimum(new, old))
        new = np.where(old > 0, np.maximum(new, 0.0), 0.0)
        change = np.where(np.isinf(old), 0.0, old) - np.where(np.isinf(new), 0.0, new)
        cost = np.zeros((n, len(before)))
        np.add.at(cost, tc, change)  # the lost host is not alive: its slots are counted whole below
        own = shape_slots[:, hosts].T
        after = before[None, :] - np.where(np.isinf(own), 0.0, own) - cost
        best.offer_many(index[ok], after[ok])
        best.evaluated += int(ok.sum())
        best.at_once += int(ok.sum())
        done.extend(index[ok].tolist())
    finished = set(done)
    return [i for i in rest if i not in finished]


def _loss_bounds(
    candidates: list[tuple[str, np.ndarray]],
    shape_slots: np.ndarray,
    classes: ConsumerClasses,
    class_requests: np.ndarray,
    shape_requests: np.ndarray,
) -> np.ndarray:
    """(candidates, S): most slots each failure can cost each shape.

    floor((f - q) / a) >= floor(f / a) - ceil(q / a), so a re-placed consumer of request q takes at
    most max_r ceil(q_r / a_r) slots of shape a from the host it lands on.
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.ceil(class_requests[:, None, :] / shape_requests[None, :, :] - EPSILON)
    both = (class_requests[:, None, :] > 0) & (shape_requests[None, :, :] > 0)
    cost = np.where(both, ratio, 0.0).max(axis=2, initial=0.0)  # (K, S)
    finite = np.where(np.isinf(shape_slots), 0.0, shape_slots)
    out = np.zeros((len(candidates), shape_slots.shape[0]))
    for start in range(0, len(candidates), 1024):
        part = candidates[start : start + 1024]
        hosts = np.concatenate([dead for _, dead in part]) if part else np.zeros(0, np.int64)
        owner = np.repeat(np.arange(len(part)), [len(dead) for _, dead in part]) + start
        np.add.at(out, owner, finite[:, hosts].T)
        if len(classes):
            position, ks, held = classes.held_on(hosts)
            np.add.at(out, owner[position], held[:, None] * cost[ks])
    return out


def _candidates(
    table: HostTable,
    shapes: ShapeSet,
    result: SlotResult,
    classes: ConsumerClasses,
    mask: np.ndarray,
    domain: str,
) -> list[tuple[str, np.ndarray]]:
    """Failure candidates of the pool: hosts with consumers or slots, or zones when the pool spans two."""
    zones = {z for z in table.zones[mask] if z}
    if domain == "zone" and len(zones) >= 2:
        return [(zone, np.flatnonzero(mask & (table.zones == zone))) for zone in sorted(zones)]
    loaded = classes.loaded() if len(classes) else np.zeros(table.size, dtype=bool)
    useful = (result.slots > 0).any(axis=0) if len(shapes) else np.zeros(table.size, dtype=bool)
    hosts = np.flatnonzero(mask & (loaded | useful))
    return [(str(table.names[h]), np.array([h])) for h in hosts]


def _subtable(table: HostTable, hosts: np.ndarray) -> HostTable:
    """The rows `hosts` of a table (views where numpy allows), for recomputing a few hosts' slots."""
    return HostTable(
        layer=table.layer,
        cloud=table.cloud,
        names=table.names[hosts],
        pools=table.pools[hosts],
        zones=table.zones[hosts],
        active=table.active[hosts],
        resources=table.resources,
        allocatable=table.allocatable[hosts],
        allocated=table.allocated[hosts],
        present=table.present[hosts],
        shared=table.shared[hosts],
        max_unit=table.max_unit[hosts],
        min_unit=table.min_unit[hosts],
        step_size=table.step_size[hosts],
        traits=[table.traits[h] for h in hosts],
        aggregates=[table.aggregates[h] for h in hosts],
        taints=[table.taints[h] for h in hosts],
        shared_providers=table.shared_providers,
    )


def _bounds_with(table: HostTable, sums: _PoolSums, shared_free: dict[tuple[str, str], float]) -> np.ndarray:
    changed = table.copy()
    for key, value in shared_free.items():
        if key in changed.shared_providers:
            changed.shared_providers[key].free = max(value, 0.0)
    bounds = sums.bounds.copy()
    for j, pool in enumerate(sums.pool_names):
        if np.isfinite(bounds[:, j]).any():
            for k in range(bounds.shape[0]):
                if np.isfinite(bounds[k, j]):
                    bounds[k, j] = changed.shared_bound(str(pool), sums.requests[k])
    return bounds

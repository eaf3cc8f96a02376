"""/metrics: the estate rendered as Prometheus exposition, once per collection, served from memory.

`prometheus_client`'s custom-collector pattern builds the families from a `Snapshot`; the text is
rendered when the snapshot changes (after a poll) and every scrape gets the cached bytes (and a
pre-compressed gzip copy). A scrape therefore never polls anything and costs microseconds, however
large the estate.

Frame-backed families (`add_frame_samples`) are written column-wise by `render_families`, byte for
byte what prometheus_client's `generate_latest` writes, ~10x faster (100k series in ~0.1-0.2 s), in
short chunks so a render never holds the GIL long enough to delay a scrape.

Core families are built here; other modules add families with `@family_builder` (headroom,
forecasts, reports). Names follow Prometheus conventions and are a contract: docs/metrics.md.
"""

from __future__ import annotations

import functools
import logging
import threading
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple, cast

import numpy as np
import pandas as pd
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.openmetrics.exposition import CONTENT_TYPE_LATEST as OPENMETRICS_CONTENT_TYPE  # noqa: F401
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from collector import __version__
from collector.estate import Snapshot

log = logging.getLogger(__name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

FamilyBuilder = Callable[[Snapshot], Iterable[Metric]]
FAMILY_BUILDERS: list[FamilyBuilder] = []

RESOURCE_LABELS = ["layer", "cloud", "pool", "host", "resource"]
CAPACITY_FAMILIES = {
    "capacity": (
        "capacity_resource_capacity",
        "Total amount of a resource a host or pool-level provider has (cores, bytes or count).",
    ),
    "allocatable": (
        "capacity_resource_allocatable",
        "What may be handed out: (capacity - reserved) x allocation ratio.",
    ),
    "allocated": ("capacity_resource_allocated", "What consumers (VMs, pods) were given."),
    "used": ("capacity_resource_used", "What is measured in use (absent where it cannot be measured)."),
}


def family_builder(func: FamilyBuilder) -> FamilyBuilder:
    """Register a function adding metric families built from a snapshot."""
    FAMILY_BUILDERS.append(func)
    return func


def load_builtin_family_modules() -> None:
    """Import every metric-family plugin (entry points `capacityd.exporters`); each uses `@family_builder`."""
    from importlib.metadata import entry_points

    for entry_point in sorted(entry_points(group="capacityd.exporters"), key=lambda ep: ep.name):
        try:
            entry_point.load()
        except Exception as error:
            raise RuntimeError(
                f"exporter plugin {entry_point.name!r} ({entry_point.value}) cannot be loaded: "
                f"{type(error).__name__}: {error}"
            ) from error


# The families a frame block can back: both take add_metric(labelvalues, value) and carry _labelnames.
FrameFamily = GaugeMetricFamily | CounterMetricFamily

# prometheus_client.utils ships no annotations; this gives its float formatter a signature.
_float_to_go_string: Callable[[float], str] = floatToGoString


def add_frame_samples(family: FrameFamily, frame: pd.DataFrame | None, labels: list[str], value_column: str) -> None:
    """Add one sample per row of `frame` to `family`: unknown (NaN) and infinite values are left out
    (unknown is absent, never 0), null label values become "". Shared by every frame-backed family.

    The rows are not turned into `Sample` objects here: `render` writes them straight from the frame's
    columns (a few C passes per label instead of Python work per sample), and `family.samples` turns
    them into `Sample`s only if something reads it (prometheus_client's own `generate_latest`, a test).
    """
    if frame is None or frame.empty:
        return
    if type(family) not in (GaugeMetricFamily, CounterMetricFamily) or len(labels) != len(family._labelnames):
        for labelvalues, value in _frame_rows(frame, labels, value_column):
            family.add_metric(list(labelvalues), value)
        return
    samples = family.samples
    if not isinstance(samples, _LazySamples):
        samples = _LazySamples(samples)
        family.samples = samples
    samples.add_block(family, _FrameBlock(frame, tuple(labels), value_column))


def _frame_rows(
    frame: pd.DataFrame, labels: list[str] | tuple[str, ...], value_column: str
) -> Iterator[tuple[tuple[str, ...], float]]:
    """(label values, value) per row with a finite value: the per-sample form of a frame block."""
    values = frame[value_column].to_numpy(dtype=float, na_value=np.nan)
    keep = np.isfinite(values)
    if not keep.any():
        return
    kept = values[keep].tolist()
    if not labels:
        yield from (((), value) for value in kept)
        return
    label_columns = [[_text(v) for v in frame[label].to_numpy(dtype=object)[keep]] for label in labels]
    yield from zip(zip(*label_columns, strict=True), kept, strict=True)


def _text(value: object) -> str:
    return "" if value is None or value is pd.NA or value != value else str(value)


class _FrameBlock(NamedTuple):
    frame: pd.DataFrame
    columns: tuple[str, ...]
    value_column: str


class _LazySamples(list):  # type: ignore[type-arg]
    """A family's `samples` with frame blocks not yet turned into `Sample`s.

    `render` reads the blocks directly; any other use of the list (iterate, len, compare, append...)
    first appends the blocks' samples in order, so the family behaves exactly like one filled with
    `add_metric`.
    """

    def __init__(self, items: Iterable[Any] = ()) -> None:
        super().__init__(items)
        self.family: FrameFamily | None = None
        self.blocks: list[_FrameBlock] = []

    def add_block(self, family: FrameFamily, block: _FrameBlock) -> None:
        self.family = family
        self.blocks.append(block)

    def materialise(self) -> None:
        blocks, self.blocks = self.blocks, []
        family = self.family
        for block in blocks:
            assert family is not None
            for labelvalues, value in _frame_rows(block.frame, block.columns, block.value_column):
                family.add_metric(list(labelvalues), value)


def _materialising(name: str) -> Callable[..., Any]:
    method = getattr(list, name)

    def wrapper(self: _LazySamples, *args: Any, **kwargs: Any) -> Any:
        if self.blocks:
            self.materialise()
        return method(self, *args, **kwargs)

    wrapper.__name__ = name
    return wrapper


for _name in (
    "__iter__",
    "__len__",
    "__getitem__",
    "__setitem__",
    "__delitem__",
    "__contains__",
    "__eq__",
    "__ne__",
    "__lt__",
    "__le__",
    "__gt__",
    "__ge__",
    "__repr__",
    "__reversed__",
    "__add__",
    "__iadd__",
    "__mul__",
    "__imul__",
    "append",
    "extend",
    "insert",
    "pop",
    "remove",
    "clear",
    "sort",
    "reverse",
    "index",
    "count",
    "copy",
):
    setattr(_LazySamples, _name, _materialising(_name))


def _gauge_from_frame(
    name: str, documentation: str, frame: pd.DataFrame, labels: list[str], value_column: str
) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, documentation, labels=labels)
    add_frame_samples(family, frame, labels, value_column)
    return family


def core_families(snapshot: Snapshot) -> Iterator[Metric]:
    capacity = snapshot.frames.get("capacity")
    if capacity is not None:
        for column, (name, documentation) in CAPACITY_FAMILIES.items():
            yield _gauge_from_frame(name, documentation, capacity, RESOURCE_LABELS, column)
    consumers = snapshot.frames.get("consumers")
    family = GaugeMetricFamily(
        "capacity_consumers",
        "Number of consumers (VMs, domains, pods) by state.",
        labels=["layer", "cloud", "pool", "host", "state"],
    )
    if consumers is not None and not consumers.empty:
        # Counted in one pass over the label columns (what groupby(...).size() gave, in its sorted
        # order; a null host counts as ""): a groupby costs milliseconds on every collection.
        columns = [
            consumers[label].to_numpy(dtype=object, na_value="" if label == "host" else None).tolist()
            for label in ("layer", "cloud", "pool", "host", "state")
        ]
        counts = Counter(zip(*columns, strict=True))
        for key in sorted(counts):
            family.add_metric([str(k) for k in key], float(counts[key]))
    yield family
    yield from self_metrics(snapshot)


def self_metrics(snapshot: Snapshot) -> Iterator[Metric]:
    labels = ["source", "kind"]
    up = GaugeMetricFamily("capacityd_source_up", "1 if the last poll of the source succeeded.", labels=labels)
    stale = GaugeMetricFamily(
        "capacityd_source_stale",
        "1 if the data served for the source is older than its last poll attempt.",
        labels=labels,
    )
    duration = GaugeMetricFamily(
        "capacityd_source_poll_duration_seconds", "Duration of the last poll of the source.", labels=labels
    )
    last_success = GaugeMetricFamily(
        "capacityd_source_last_success_timestamp_seconds", "Unix time of the last successful poll.", labels=labels
    )
    errors = CounterMetricFamily(
        "capacityd_source_errors", "Failed polls of the source, by reason.", labels=[*labels, "reason"]
    )
    skipped = CounterMetricFamily(
        "capacityd_source_items_skipped",
        "Items (domains, providers, nodes) left out of otherwise good polls, by reason.",
        labels=[*labels, "reason"],
    )
    polls = CounterMetricFamily("capacityd_source_polls", "Polls attempted.", labels=labels)
    api_calls = GaugeMetricFamily(
        "capacityd_source_api_calls", "Remote API calls made by the last successful poll.", labels=labels
    )
    for status in snapshot.statuses:
        key = [status.name, status.kind]
        up.add_metric(key, 1.0 if status.up else 0.0)
        stale.add_metric(key, 1.0 if status.stale else 0.0)
        polls.add_metric(key, float(status.polls_total))
        if status.poll_duration_seconds is not None:
            duration.add_metric(key, status.poll_duration_seconds)
        if status.last_success is not None:
            last_success.add_metric(key, status.last_success.timestamp())
        for reason, count in sorted(status.errors_total.items()):
            errors.add_metric([*key, reason], float(count))
        for reason, count in sorted(status.skipped_total.items()):
            skipped.add_metric([*key, reason], float(count))
        if status.api_calls is not None:
            api_calls.add_metric(key, float(status.api_calls))
    yield from (up, stale, duration, last_success, errors, skipped, polls, api_calls)
    info = GaugeMetricFamily("capacityd_build_info", "capacityd version.", labels=["version"])
    info.add_metric([__version__], 1.0)
    yield info
    taken = GaugeMetricFamily("capacityd_snapshot_timestamp_seconds", "Unix time the served exposition was rendered.")
    taken.add_metric([], snapshot.taken_at.timestamp())
    yield taken


class SnapshotCollector(Collector):
    """prometheus_client custom collector over one snapshot (core + registered families)."""

    def __init__(self, snapshot: Snapshot):
        self.snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        yield from core_families(self.snapshot)
        for builder in FAMILY_BUILDERS:
            try:
                yield from builder(self.snapshot)
            except Exception:
                log.exception("metric family builder %s failed", getattr(builder, "__name__", builder))


def render(snapshot: Snapshot) -> bytes:
    """The text exposition (format 0.0.4) of a snapshot: what `generate_latest` writes, byte for byte."""
    return b"".join(render_chunks(snapshot))


def render_chunks(snapshot: Snapshot) -> list[bytes]:
    """`render` in pieces of about `CHUNK_BYTES`: joining tens of MB into one bytes object is a single
    C call that holds the GIL for tens of ms (fresh pages faulted in), so the cache keeps the pieces."""
    return _render_chunks(SnapshotCollector(snapshot).collect())


CHUNK_BYTES = 1 << 20


def render_families(families: Iterable[Metric]) -> bytes:
    """`prometheus_client.generate_latest` for these families, with frame blocks written column-wise.

    A family without frame blocks goes through `generate_latest` itself. A frame block is written a
    chunk of rows at a time: each label column is factorised (C), only its distinct values are escaped
    and formatted, and one f-string per row joins the pieces. Chunks keep every C call short, so a
    render never holds the GIL long enough to delay a scrape served by another thread.
    """
    return b"".join(_render_chunks(families))


def _render_chunks(families: Iterable[Metric]) -> list[bytes]:
    output: list[str] = []
    labels_cache: _LabelCache = {}
    for family in families:
        samples = family.samples
        if isinstance(samples, _LazySamples) and samples.blocks:
            _render_blocks(family, samples, output, labels_cache)
        else:
            output.append(generate_latest(_One(family)).decode("utf-8"))
    chunks: list[bytes] = []
    pending: list[str] = []
    size = 0
    for piece in output:  # small pieces (headers, small families) grouped, big ones (row chunks) alone
        pending.append(piece)
        size += len(piece)
        if size >= CHUNK_BYTES:
            chunks.append("".join(pending).encode("utf-8"))
            pending, size = [], 0
    if pending:
        chunks.append("".join(pending).encode("utf-8"))
    return chunks


class _One(Collector):
    def __init__(self, family: Metric):
        self.family = family

    def collect(self) -> Iterator[Metric]:
        yield self.family


RENDER_CHUNK_ROWS = 8192


def _render_blocks(family: Metric, samples: _LazySamples, output: list[str], labels_cache: _LabelCache) -> None:
    counter = family.type == "counter"
    name = family.name + "_total" if counter else family.name
    documentation = family.documentation.replace("\\", r"\\").replace("\n", r"\n")
    output.append(f"# HELP {name} {documentation}\n# TYPE {name} {family.type}\n")
    plain = list.__iter__(samples)  # added with add_metric before the first block
    output.extend(_sample_line(sample) for sample in plain)
    # only add_frame_samples makes _LazySamples, and only for a FrameFamily
    label_names: tuple[str, ...] = tuple(cast(FrameFamily, family)._labelnames)
    for block in samples.blocks:
        _render_block(name, label_names, block, output, labels_cache)


def _sample_line(sample: Any) -> str:
    labels = ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(sample.labels.items()))
    timestamp = "" if sample.timestamp is None else f" {int(float(sample.timestamp) * 1000):d}"
    return (
        f"{sample.name}{{{labels}}} {_float_to_go_string(sample.value)}{timestamp}\n"
        if labels
        else f"{sample.name} {_float_to_go_string(sample.value)}{timestamp}\n"
    )


def _escape(value: str) -> str:
    if "\\" in value or "\n" in value or '"' in value:
        return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")
    return value


# (id(frame), ((label name, column), ...)) -> (frame, label text of every row): families over the same
# frame and label columns (the four capacity families, the headroom ones) format their labels once.
_LabelCache = dict[tuple[int, tuple[tuple[str, str], ...]], tuple[pd.DataFrame, np.ndarray]]


def _label_texts(frame: pd.DataFrame, pairs: tuple[tuple[str, str], ...], cache: _LabelCache) -> np.ndarray:
    """`a="x",b="y"` for every row of `frame`, labels in name order, built a chunk of rows at a time."""
    key = (id(frame), pairs)
    hit = cache.get(key)
    if hit is not None and hit[0] is frame:
        return hit[1]
    columns = [(label, frame[column].to_numpy(dtype=object)) for label, column in pairs]
    texts = np.empty(len(frame), dtype=object)
    for start in range(0, len(frame), RENDER_CHUNK_ROWS):
        stop = min(start + RENDER_CHUNK_ROWS, len(frame))
        pieces = []
        for label, column in columns:
            codes, uniques = pd.factorize(column[start:stop])
            formatted = [f'{label}="{_escape(_text(u))}"' for u in uniques]
            formatted.append(f'{label}=""')  # code -1 (null) picks the last entry
            pieces.append(np.array(formatted, dtype=object)[codes])
        texts[start:stop] = [",".join(row) for row in zip(*pieces, strict=True)]
    cache[key] = (frame, texts)
    return texts


def _render_block(
    name: str, label_names: tuple[str, ...], block: _FrameBlock, output: list[str], labels_cache: _LabelCache
) -> None:
    frame = block.frame
    values = frame[block.value_column].to_numpy(dtype=float, na_value=np.nan)
    kept = np.flatnonzero(np.isfinite(values))
    if not kept.size:
        return
    pairs = tuple(sorted(zip(label_names, block.columns, strict=True)))  # generate_latest sorts labels
    labels = _label_texts(frame, pairs, labels_cache) if pairs else None
    for start in range(0, kept.size, RENDER_CHUNK_ROWS):
        rows = kept[start : start + RENDER_CHUNK_ROWS]
        codes, uniques = pd.factorize(values[rows].view(np.int64))  # by bit pattern: -0.0 stays "-0.0"
        texts = np.array([_float_to_go_string(v) for v in uniques.view(np.float64).tolist()], dtype=np.object_)[codes]
        if labels is not None:
            output.append(
                "".join([f"{name}{{{label}}} {text}\n" for label, text in zip(labels[rows], texts, strict=True)])
            )
        else:
            output.append("".join([f"{name} {text}\n" for text in texts]))


@dataclass(frozen=True)
class Exposition:
    """One rendered exposition, plain and gzipped, each kept as the pieces it was made of (see
    `render_chunks`): the server writes the pieces; `body` and `gzipped` join them on first use."""

    chunks: tuple[bytes, ...]
    gzipped_chunks: tuple[bytes, ...]

    @classmethod
    def of(cls, chunks: Iterable[bytes]) -> Exposition:
        chunks = tuple(chunk for chunk in chunks if chunk)
        compressor = zlib.compressobj(5, zlib.DEFLATED, 31)  # gzip framing; deflate releases the GIL
        gzipped = [compressor.compress(chunk) for chunk in chunks]
        gzipped.append(compressor.flush())
        return cls(chunks, tuple(piece for piece in gzipped if piece))

    @functools.cached_property
    def body(self) -> bytes:
        return b"".join(self.chunks)

    @functools.cached_property
    def gzipped(self) -> bytes:
        return b"".join(self.gzipped_chunks)

    @property
    def size(self) -> int:
        return sum(len(chunk) for chunk in self.chunks)


class ExpositionCache:
    """Holds the last rendered exposition; `update` renders, scrapes read `current`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._current = Exposition.of([])

    def update(self, snapshot: Snapshot) -> Exposition:
        exposition = Exposition.of(render_chunks(snapshot))
        with self._lock:
            self._current = exposition
        return exposition

    @property
    def current(self) -> Exposition:
        with self._lock:
            return self._current

"""Remote-history benchmark: building a poll's remote-write request, writing it to a real VictoriaMetrics,
and reading a forecast pass's pool totals back through PromQL.

    .venv/bin/python bench/bench_remote_write.py [--hosts 5000] [--runs 5]

1. Encode: one poll of `--hosts` hosts x 4 resources (5 values each) with capacityd's hand-written encoder
   (label sets cached per series, the steady state of a daemon) next to the reference protobuf runtime
   building message objects for the same request (the peer), median of `--runs`, and the ratio.
2. Write: the same polls POSTed to a real VictoriaMetrics (loopback, temp dir): samples per second.
3. Read: a forecast pass's input (8 weeks of hourly pool totals, `sum by` pushed into PromQL) after
   writing 8 weeks of hourly polls of 200 hosts in 20 pools, in a fresh VictoriaMetrics, next to the
   embedded store's pool_series on the same polls (the peer); seconds, median of `--runs`, and the ratio.
Needs `victoria-metrics` (scripts/provision/tsdb.sh) and `protobuf` (the `test` extra).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import cramjam
from bench_cluster import median_seconds

from collector.store.history import History
from collector.store.remote.client import RemoteWriter
from collector.store.remote.promql import PromReader
from collector.store.remote.samples import SERIES_LABELS, VALUE_METRICS, SeriesEncoder
from collector.store.remote.wire import encode_request
from collector.store.settings import HistoryConfig, RemoteHistoryConfig
from tests.history.frames import capacity_frame
from tests.remote.prompb import WriteRequest
from tests.remote.tsdb import flush, victoria_metrics


def reference_request(frame, when: datetime, source: str) -> bytes:  # type: ignore[no-untyped-def]
    """The peer: protobuf message objects for the same request, serialised and compressed."""
    request = WriteRequest()
    ts_ms = int(when.timestamp() * 1000)
    labels = [frame[c].astype(str).tolist() if c != "source" else [source] * len(frame) for c in SERIES_LABELS]
    for column, metric in VALUE_METRICS.items():
        for index, value in enumerate(frame[column].tolist()):
            series = request.timeseries.add()
            pairs = sorted([("__name__", metric), *((n, labels[i][index]) for i, n in enumerate(SERIES_LABELS))])
            for name, label in pairs:
                series.labels.add(name=name, value=label)
            series.samples.add(timestamp=ts_ms, value=value)
    return bytes(cramjam.snappy.compress_raw(request.SerializeToString()))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hosts", type=int, default=5000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    when = datetime.now(UTC).replace(microsecond=0) - timedelta(days=1)
    pools = tuple(f"az{i}" for i in range(10))
    frame = capacity_frame(when, pools=pools, hosts_per_pool=args.hosts // len(pools),
                           resources=("cpu", "memory", "disk", "pods"))  # fmt: skip
    encoder = SeriesEncoder()
    encoder.encode("kvm", frame, when)  # warm the label cache, as after a daemon's first poll
    ours = median_seconds(lambda: encode_request(encoder.encode("kvm", frame, when)[0]), args.runs)
    cold = median_seconds(lambda: encode_request(SeriesEncoder().encode("kvm", frame, when)[0]), args.runs)
    peer = median_seconds(lambda: reference_request(frame, when, "kvm"), args.runs)
    series, samples = encoder.encode("kvm", frame, when)
    print(f"encode one poll: {len(frame)} rows, {samples} samples, {len(encode_request(series))} bytes")
    print(f"  capacityd encoder (cached labels): {ours * 1000:.1f} ms median of {args.runs}")
    print(f"  capacityd encoder (cold cache):    {cold * 1000:.1f} ms")
    print(f"  protobuf message objects (peer):   {peer * 1000:.1f} ms")
    print(f"  ratio peer / capacityd cached: {peer / ours:.2f}x; cold: {peer / cold:.2f}x")

    with tempfile.TemporaryDirectory() as tmp:
        vm = victoria_metrics(Path(tmp))
        try:
            writer = RemoteWriter(RemoteHistoryConfig(write_url=f"{vm.url}/api/v1/write", max_retries=0))
            times = []
            for run in range(args.runs):
                at = when + timedelta(minutes=5 * run)
                batch, count = encoder.encode("kvm", frame, at)
                started = time.perf_counter()
                assert writer.write(batch, count)
                times.append(time.perf_counter() - started)
            write = statistics.median(times)
            print(f"write one poll to VictoriaMetrics (compress + POST): {write * 1000:.0f} ms median of "
                  f"{args.runs}, {samples / write:,.0f} samples/s; encode+write {samples / (write + ours):,.0f}"
                  " samples/s")  # fmt: skip

        finally:
            vm.stop()

    with tempfile.TemporaryDirectory() as tmp:
        vm = victoria_metrics(Path(tmp))
        history = History.open(Path(tmp) / "state", HistoryConfig())
        try:
            writer = RemoteWriter(RemoteHistoryConfig(write_url=f"{vm.url}/api/v1/write", max_retries=0))
            small = capacity_frame(when, pools=tuple(f"p{i}" for i in range(20)), hosts_per_pool=10,
                                   resources=("cpu", "memory"))  # fmt: skip
            start = when - timedelta(weeks=8)
            for hour in range(8 * 7 * 24):
                at = start + timedelta(hours=hour)
                poll = small.assign(allocated=small["allocated"] * (1 + hour / 2000))
                writer.write(*encoder.encode("kvm", poll, at))
                history.append("kvm", {"capacity": poll}, at)
            flush(vm)
            reader = PromReader(RemoteHistoryConfig(write_url=f"{vm.url}/api/v1/write"))
            end = when + timedelta(hours=1)
            rows = reader.pool_series(start=start, end=end, step=timedelta(hours=1))
            read = median_seconds(lambda: reader.pool_series(start=start, end=end, step=timedelta(hours=1)), args.runs)
            local = median_seconds(lambda: history.pool_series(start=start, end=end, step=timedelta(hours=1)),
                                   args.runs)  # fmt: skip
            print(f"read a forecast pass (8 weeks hourly, 40 pool series summed in PromQL from 400 host series): "
                  f"{read:.2f} s median of {args.runs} ({len(rows)} rows)")  # fmt: skip
            print(f"  peer: the embedded store's pool_series on the same polls: {local:.2f} s; "
                  f"ratio remote / embedded: {read / local:.2f}")  # fmt: skip
        finally:
            history.close()
            vm.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

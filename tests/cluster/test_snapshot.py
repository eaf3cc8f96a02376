"""The /snapshot wire format: real frames survive Arrow IPC exactly; bad input is refused with its place named."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from collector.app.cluster.snapshot import SnapshotFetchError, decode_frame, encode_frame, fetch
from collector.app.config import parse_config
from collector.app.daemon import collect_once
from collector.contract.schema import SchemaError
from collector.demo.model import CLOUD, REGION, build_estate
from collector.demo.standins.openstack import StandinServer, from_demo_estate
from tests.faults.harness import NODE5


@pytest.fixture(scope="module")
def polled(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, pd.DataFrame]]:
    server = StandinServer(from_demo_estate(build_estate(), growth_every=3600.0)).start()
    try:
        clouds = server.write_clouds_yaml(tmp_path_factory.mktemp("os") / "clouds.yaml", CLOUD, REGION)
        config = parse_config(
            {
                "sources": [
                    {"kind": "openstack", "name": CLOUD, "cloud": CLOUD, "clouds_yaml": str(clouds), "region": REGION},
                    {"kind": "libvirt", "name": "node5", "uri": f"test://{NODE5}"},
                ]
            }
        )
        snapshot = collect_once(config, analyses=False)
        yield {name: frame for name, frame in snapshot.frames.items() if len(frame) and name != "sources"}
    finally:
        server.stop()


def test_real_frames_round_trip_exactly(polled: dict[str, pd.DataFrame]) -> None:
    assert {"capacity", "consumers", "hosts", "flavors"} <= set(polled)
    for name, frame in polled.items():
        back = decode_frame(name, encode_frame(frame))
        pd.testing.assert_frame_equal(back, frame.reset_index(drop=True), check_exact=True, obj=name)
    flavors = decode_frame("flavors", encode_frame(polled["flavors"]))
    assert all(isinstance(v, dict) for v in flavors["resources"])  # dicts stay dicts, not Arrow structs


amounts = st.dictionaries(
    st.sampled_from(["vcpu", "memory", "disk", "nvidia_com_gpu"]),
    st.floats(min_value=0, max_value=1e15, allow_nan=False),
    max_size=4,
)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.one_of(st.none(), amounts), min_size=1, max_size=20))
def test_dict_columns_with_different_keys_per_row_come_back_as_they_left(
    polled: dict[str, pd.DataFrame], resources: list[dict[str, float] | None]
) -> None:
    base = polled["consumers"]
    frame = pd.concat([base.iloc[:1]] * len(resources), ignore_index=True)
    frame["id"] = pd.Series([f"vm-{i}" for i in range(len(resources))], dtype="string")  # the key stays unique
    frame["resources"] = pd.Series(resources, dtype=object)
    back = decode_frame("consumers", encode_frame(frame))
    assert back["resources"].tolist() == resources


def test_a_frame_breaking_the_contract_is_refused_naming_the_column(polled: dict[str, pd.DataFrame]) -> None:
    frame = polled["capacity"].copy()
    frame["capacity"] = frame["capacity"].astype(object)
    frame.loc[0, "capacity"] = "lots"
    with pytest.raises(SchemaError, match=r"capacity\.capacity row 0"):
        decode_frame("capacity", encode_frame(frame))


def test_a_collector_answering_garbage_is_named(tmp_path: Path) -> None:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b'{"sources": [], "frames": {"capacity": 3}}' if self.path == "/snapshot" else b"not arrow"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        with pytest.raises(SnapshotFetchError, match=rf"{url}/snapshot: Arrow"):
            fetch(url, timeout=5)
    finally:
        server.shutdown()

"""The scrape fast path's head parser agrees with the stdlib's on every head it accepts, and hands every
unusual head (other methods and versions, folded or malformed lines, Expect) to the stdlib."""

from __future__ import annotations

import http.client
import io

from hypothesis import given
from hypothesis import strategies as st

from exporters.prometheus.http import _simple_head

TOKEN = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-", min_size=1, max_size=20)
VALUE = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789 ,;=/.*-", max_size=40)


def _stdlib(rest: bytes) -> http.client.HTTPMessage:
    return http.client.parse_headers(io.BytesIO(rest))


@given(st.lists(st.tuples(TOKEN, VALUE), max_size=12), st.sampled_from([b"GET", b"HEAD"]))
def test_accepted_heads_read_as_the_stdlib_reads_them(fields: list[tuple[str, str]], method: bytes) -> None:
    rest = b"".join(f"{name}: {value}\r\n".encode() for name, value in fields) + b"\r\n"
    parsed = _simple_head(method + b" /metrics HTTP/1.1\r\n", rest)
    if any(name.lower() == "expect" for name, _ in fields):
        assert parsed is None
        return
    assert parsed is not None
    (got_method, target, version), ours = parsed
    assert (got_method, target, version) == (method, b"/metrics", b"HTTP/1.1")
    theirs = _stdlib(rest)
    for name, _ in fields:
        for spelled in (name, name.lower(), name.upper()):
            # RFC 9110 5.5: whitespace around a value is not part of it (the stdlib keeps the trailing one)
            expected = theirs.get(spelled)
            assert ours.get(spelled) == (expected.strip(" \t") if expected is not None else None), spelled
    assert ours.get("Not-Sent") is None and ours.get("Not-Sent", "d") == "d"


def test_unusual_heads_go_to_the_stdlib() -> None:
    ok = b"Host: x\r\n\r\n"
    for line, rest in [
        (b"POST /metrics HTTP/1.1\r\n", ok),
        (b"GET /metrics HTTP/2.0\r\n", ok),
        (b"GET /metrics\r\n", ok),  # HTTP/0.9
        (b"GET //evil HTTP/1.1\r\n", ok),
        (b"GET http://x/metrics HTTP/1.1\r\n", ok),
        (b"GET /metrics HTTP/1.1\r\n", b"Host: x\r\n folded\r\n\r\n"),
        (b"GET /metrics HTTP/1.1\r\n", b"Host : x\r\n\r\n"),
        (b"GET /metrics HTTP/1.1\r\n", b"no colon\r\n\r\n"),
        (b"GET /metrics HTTP/1.1\r\n", b"Expect: 100-continue\r\n\r\n"),
        (b"GET /metrics HTTP/1.1\r\n", b"".join(b"X-%d: y\r\n" % i for i in range(150)) + b"\r\n"),
    ]:
        assert _simple_head(line, rest) is None, (line, rest)
    # repeated fields: the first, as the stdlib's Message.get
    parsed = _simple_head(b"GET /metrics HTTP/1.0\r\n", b"Connection: keep-alive\r\nConnection: close\r\n\r\n")
    assert parsed is not None and parsed[1].get("connection") == "keep-alive"

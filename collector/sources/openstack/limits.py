"""Bounded reads of OpenStack API answers: a size cap per response and a wall deadline per poll.

openstacksdk (keystoneauth, requests) would otherwise read every body whole, however big, and a
server that drips one byte per second never trips a socket timeout (each read returns something),
so the poll would last as long as the server likes. The client therefore asks for the answer with
`stream=True` and reads the body here, chunk by chunk (`read1`: one receive at most, so a dripping
server is seen between receives), stopping as soon as

* the body passes `limit` bytes, or its Content-Length already announces more: `too_large`;
* the poll's deadline (monotonic clock) passes: `timeout`;
* the connection ends before the announced length, or a chunked body breaks off: `malformed`
  (a truncated answer is a malformed answer, not an internal error).

The body read is stored back on the `requests.Response` (`_content`), so `.json()` and `.text`
work on it as on any response.
"""

from __future__ import annotations

import http.client
import time
from typing import Any

from collector.sources.base import SourceError

CHUNK_BYTES = 1 << 16
"""Most bytes asked of the socket per read; `read1` returns what one receive gives, often less."""


def read_bounded(response: Any, *, limit: int, deadline: float | None, what: str) -> bytes:
    """Read `response`'s body (a `requests.Response` opened with `stream=True`) within `limit` and `deadline`.

    `what` names the request in errors ("cloud prod: compute GET /servers/detail"). On any error the
    response is closed (its connection is not reused: the rest of the body is never read).
    """
    import requests
    import urllib3.exceptions

    declared = _content_length(response)
    if declared is not None and declared > limit:
        response.close()
        raise SourceError(
            "too_large",
            f"{what}: the answer announces {_size(declared)} (Content-Length), over the "
            f"{_size(limit)} cap (max_response_size)",
        )
    body = bytearray()
    raw = response.raw
    try:
        while True:
            if deadline is not None and time.monotonic() > deadline:
                raise SourceError(
                    "timeout",
                    f"{what}: the answer was still arriving when the poll's deadline passed "
                    f"({_size(len(body))} read"
                    + (f" of {_size(declared)}" if declared is not None else "")
                    + "; poll_deadline)",
                )
            chunk = raw.read1(CHUNK_BYTES, decode_content=True)
            if not chunk:
                if not raw.closed and hasattr(raw, "length_remaining") and raw.length_remaining:
                    raise http.client.IncompleteRead(bytes(body), raw.length_remaining)
                break
            body += chunk
            if len(body) > limit:
                raise SourceError(
                    "too_large",
                    f"{what}: the answer passed the {_size(limit)} cap (max_response_size) before it ended",
                )
    except SourceError:
        response.close()
        raise
    except (urllib3.exceptions.ReadTimeoutError, TimeoutError):
        response.close()
        raise SourceError(
            "timeout", f"{what}: the server stopped sending the answer after {_size(len(body))}"
        ) from None
    except (
        urllib3.exceptions.ProtocolError,
        urllib3.exceptions.DecodeError,
        http.client.IncompleteRead,
        requests.exceptions.ChunkedEncodingError,
        ConnectionError,
    ) as error:
        response.close()
        expected = f" of the {_size(declared)} announced" if declared is not None else ""
        raise SourceError(
            "malformed",
            f"{what}: the answer was cut off after {_size(len(body))}{expected} "
            f"({type(error).__name__}); a truncated body is not read",
        ) from None
    content = bytes(body)
    response._content = content  # what requests' .content/.json()/.text read
    response._content_consumed = True
    return content


def _content_length(response: Any) -> int | None:
    try:
        value = int(response.headers.get("Content-Length", ""))
    except (TypeError, ValueError):
        return None
    return value if value >= 0 else None


def _size(count: int) -> str:
    """Bytes for a message: exact below 1 MiB, else MiB with one decimal."""
    return f"{count} bytes" if count < 1 << 20 else f"{count / (1 << 20):.1f} MiB"

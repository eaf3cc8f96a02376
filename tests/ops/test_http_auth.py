"""Basic auth takes the same time whether or not the user exists, whatever bcrypt costs the users have."""

from __future__ import annotations

import base64
import os
import statistics
import time
from collections.abc import Callable

import bcrypt
import pytest

from exporters.prometheus.http import BasicAuth

CHEAP, DEAR = 4, 8  # users' hash costs differ, and neither is the cost-10 default


def header(user: str) -> str:
    password = os.urandom(8).hex()  # a new credential each time: the verdict cache never answers
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.fixture(scope="module")
def auth() -> BasicAuth:
    return BasicAuth(
        {
            "cheap": bcrypt.hashpw(b"pw-cheap", bcrypt.gensalt(rounds=CHEAP)),
            "dear": bcrypt.hashpw(b"pw-dear", bcrypt.gensalt(rounds=DEAR)),
        }
    )


def work(auth: BasicAuth, user: str, monkeypatch: pytest.MonkeyPatch) -> int:
    """bcrypt work units (2^cost per hash checked) one uncached check does."""
    units: list[int] = []
    real = bcrypt.checkpw

    def counting(password: bytes, hashed: bytes) -> bool:
        units.append(2 ** int(hashed.split(b"$")[2]))
        return real(password, hashed)

    monkeypatch.setattr(bcrypt, "checkpw", counting)
    assert auth.check(header(user)) is None
    monkeypatch.setattr(bcrypt, "checkpw", real)
    return sum(units)


def test_every_check_does_the_work_of_the_dearest_hash(auth: BasicAuth, monkeypatch: pytest.MonkeyPatch) -> None:
    assert work(auth, "nobody", monkeypatch) == 2**DEAR
    assert work(auth, "cheap", monkeypatch) == 2**DEAR
    assert work(auth, "dear", monkeypatch) == 2**DEAR


def test_right_passwords_still_pass_and_cache(auth: BasicAuth) -> None:
    for user in ("cheap", "dear"):
        good = "Basic " + base64.b64encode(f"{user}:pw-{user}".encode()).decode()
        assert auth.check(good) == user and auth.check(good) == user
    assert auth.check("Basic " + base64.b64encode(b"nobody:pw-dear").decode()) is None


def median_seconds(check: Callable[[], None], runs: int = 15) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        check()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def test_timing_does_not_tell_whether_a_user_exists(auth: BasicAuth) -> None:
    # Interleaved medians, so machine load moves every case alike. Without the padding the cheap user
    # answers 16x faster than the dear one and an unknown user costs a cost-10 hash (64x).
    rounds = [
        {user: median_seconds(lambda u=user: auth.check(header(u))) for user in ("nobody", "cheap", "dear")}
        for _ in range(3)
    ]
    medians = {user: statistics.median(r[user] for r in rounds) for user in ("nobody", "cheap", "dear")}
    slowest, fastest = max(medians.values()), min(medians.values())
    assert slowest / fastest < 1.6, medians

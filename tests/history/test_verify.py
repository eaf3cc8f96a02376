"""verify(path): a sound history passes; every kind of misfiled row is named (ownership, dangling keys)."""

from __future__ import annotations

import sqlite3
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from collector.store.history import SCHEMA_VERSION, History
from collector.store.settings import HistoryConfig
from collector.store.verify import verify
from tests.history.frames import capacity_frame, consumers_frame

MIN = timedelta(minutes=1)


def fill(history: History, t0: datetime, polls: int = 5) -> None:
    for i in range(polls):
        for source, cloud in (("a", "ca"), ("b", "cb")):
            when = t0 + i * MIN + (30 if source == "b" else 0) * timedelta(seconds=1)
            history.append(source, {"capacity": capacity_frame(when, source=source, cloud=cloud),
                                    "consumers": consumers_frame(when, source=source, cloud=cloud)}, when)  # fmt: skip
    history.flush()


@pytest.fixture
def sound(tmp_path: Path, config: HistoryConfig, t0: datetime) -> Path:
    with History.open(tmp_path / "state", config) as history:
        fill(history, t0)
        history.compact(t0 + timedelta(hours=2))
        path = history.path
    return path


def test_a_sound_history_passes(sound: Path) -> None:
    assert verify(sound) == []


def test_rows_under_another_sources_keys_are_named(sound: Path) -> None:
    with sqlite3.connect(sound) as con:
        # What the lost-transaction bug did: a's poll rows written under b's keys, at a's poll times.
        b_key = con.execute("SELECT pkey FROM pool_keys WHERE source = 'b' LIMIT 1").fetchone()[0]
        a_times = [row[0] for row in con.execute("SELECT ts FROM source_polls WHERE source = 'a'")]
        con.executemany("INSERT OR REPLACE INTO pool_raw (pkey, ts, capacity) VALUES (?, ?, 1)",
                        [(b_key, ts) for ts in a_times])  # fmt: skip
    problems = verify(sound)
    assert len(problems) == 1
    assert f"{len(a_times)} rows of pool_raw are filed under keys of source 'b' at times it never polled" in problems[0]


def test_rows_pointing_at_missing_keys_are_named(sound: Path) -> None:
    with sqlite3.connect(sound) as con:
        con.execute("INSERT INTO host_raw (ts, hkey, capacity) VALUES (1, 9999, 1)")
        con.execute("INSERT INTO consumer_counts VALUES (1, 777, 3)")
    problems = verify(sound)
    assert any("1 rows of host_raw point at host_keys that do not exist (hkey 9999)" in p for p in problems)
    assert any("1 rows of consumer_counts point at count_keys that do not exist (gkey 777)" in p for p in problems)


def test_keys_of_a_source_that_never_polled_and_foreign_consumer_hours(sound: Path) -> None:
    with sqlite3.connect(sound) as con:
        con.execute("INSERT INTO pool_keys (fp, source, layer, cloud, pool, resource, scope) "
                    "VALUES (42, 'ghost', 'hypervisor', 'x', 'p', 'cpu', 'host')")  # fmt: skip
        ckey = con.execute("SELECT ckey FROM consumer_keys WHERE source = 'b' LIMIT 1").fetchone()[0]
        hour = con.execute("SELECT max(hour) FROM consumer_hourly").fetchone()[0]
        con.execute("INSERT INTO consumer_hourly VALUES (?, ?, 1, 1, 1, 1, 1)", (hour + 7200, ckey))
    problems = verify(sound)
    assert any("1 pool_keys belong to source 'ghost', which never stored a poll" in p for p in problems)
    assert any("1 rows of consumer_hourly are filed under consumers of source 'b' in hours it never polled" in p
               for p in problems)  # fmt: skip


def test_damaged_and_foreign_files_are_reported_not_raised(tmp_path: Path, sound: Path) -> None:
    assert verify(tmp_path / "missing.sqlite") == [f"{tmp_path / 'missing.sqlite'}: no such file"]
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"not a database" * 100)
    assert "cannot be read as capacityd history" in verify(junk)[0]


def test_a_version_1_file_is_migrated_and_checked_from_then_on(
    tmp_path: Path, config: HistoryConfig, t0: datetime
) -> None:
    with History.open(tmp_path / "state", config) as history:
        fill(history, t0)
        path = history.path
    with sqlite3.connect(path) as con:  # what capacityd with schema version 1 wrote
        con.execute("DROP TABLE source_polls")
        con.execute("DELETE FROM meta WHERE key = 'polls_since'")
        con.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
    assert "schema version 1" in verify(path)[0]
    with History.open(tmp_path / "state", config) as history:
        assert len(history.pool_series()) > 0  # the old rows read as before
    with sqlite3.connect(path) as con:
        assert con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0] == str(SCHEMA_VERSION)
    assert verify(path) == []  # rows from before the migration are not claimed to be unowned

"""`verify(path)`: is every stored row where it belongs? (docs/history.md, "Verifying a history file").

`PRAGMA integrity_check` proves the file is a sound SQLite database; it cannot see a row filed under
the wrong key, which is what a lost transaction used to leave behind (a key id cached in memory after
its transaction rolled back, later given to another source). Checked here, read-only:

* integrity: `PRAGMA integrity_check`, and a schema version this capacityd knows;
* no dangling key: every row of a data table points at an existing key;
* every key's source exists (is in `sources`);
* ownership: every raw row (and every consumer count and hourly usage row) still covered by
  `source_polls` was written at a time its key's source polled: a row of B's key at a time only A
  polled is A's data misfiled under B's labels.
"""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path

from collector.store.schema import SCHEMA_VERSION

# data table, its key column, the key table
_DATA_TABLES = (
    ("pool_raw", "pkey", "pool_keys"),
    ("pool_rollup", "pkey", "pool_keys"),
    ("host_raw", "hkey", "host_keys"),
    ("host_rollup", "hkey", "host_keys"),
    ("consumer_hourly", "ckey", "consumer_keys"),
    ("consumer_counts", "gkey", "count_keys"),
)
_KEY_TABLES = ("pool_keys", "host_keys", "consumer_keys", "count_keys")
# tables whose rows are written by one poll at its own time: (table, key column, key table, time column)
_POLLED_TABLES = (
    ("pool_raw", "pkey", "pool_keys", "ts"),
    ("host_raw", "hkey", "host_keys", "ts"),
    ("consumer_counts", "gkey", "count_keys", "ts"),
)
_EXAMPLES = 3


def _when(ts: int) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def verify(path: Path) -> list[str]:
    """Problems found in the history file at `path` (one sentence each); an empty list means sound.

    Read-only; safe while a daemon writes (the checks run in one read transaction).
    """
    path = Path(path)
    if not path.exists():
        return [f"{path}: no such file"]
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        con.execute("BEGIN")
        return _check(con, path)
    except sqlite3.DatabaseError as error:
        return [f"{path}: cannot be read as capacityd history: {error}"]
    finally:
        con.close()


def _check(con: sqlite3.Connection, path: Path) -> list[str]:
    problems = [f"{path}: integrity_check: {row[0]}" for row in con.execute("PRAGMA integrity_check")
                if row[0] != "ok"]  # fmt: skip
    if problems:
        return problems  # the rest reads through a damaged file: not meaningful
    meta = dict(con.execute("SELECT key, value FROM meta").fetchall())
    version = int(meta.get("schema_version", 0))
    if version != SCHEMA_VERSION:
        return [f"{path}: schema version {version}; this capacityd verifies version {SCHEMA_VERSION}"]
    for table, key_column, key_table in _DATA_TABLES:
        rows = con.execute(
            f"SELECT d.{key_column}, count(*) FROM {table} d WHERE NOT EXISTS "
            f"(SELECT 1 FROM {key_table} k WHERE k.{key_column} = d.{key_column}) GROUP BY d.{key_column}"
        ).fetchall()
        if rows:
            examples = ", ".join(str(key) for key, _ in rows[:_EXAMPLES])
            problems.append(f"{path}: {sum(n for _, n in rows)} rows of {table} point at {key_table} that do not "
                            f"exist ({key_column} {examples}{', ...' if len(rows) > _EXAMPLES else ''})")  # fmt: skip
    for key_table in _KEY_TABLES:
        rows = con.execute(
            f"SELECT source, count(*) FROM {key_table} WHERE source NOT IN (SELECT source FROM sources) GROUP BY source"
        ).fetchall()
        for source, count in rows:
            problems.append(f"{path}: {count} {key_table} belong to source {source!r}, which never stored a poll")
    since = max(int(meta.get("polls_since", 0)), int(meta.get("pool_raw_floor", 0)))
    for table, key_column, key_table, time_column in _POLLED_TABLES:
        rows = con.execute(
            f"SELECT k.source, count(*), min(d.{time_column}) FROM {table} d JOIN {key_table} k "
            f"ON k.{key_column} = d.{key_column} WHERE d.{time_column} >= ? AND NOT EXISTS "
            f"(SELECT 1 FROM source_polls p WHERE p.source = k.source AND p.ts = d.{time_column}) GROUP BY k.source",
            (since,),
        ).fetchall()
        for source, count, first in rows:
            problems.append(f"{path}: {count} rows of {table} are filed under keys of source {source!r} at "
                            f"times it never polled (first at {_when(first)}): another source's data under its "
                            "labels")  # fmt: skip
    rows = con.execute(
        "SELECT k.source, count(*), min(d.hour) FROM consumer_hourly d JOIN consumer_keys k ON k.ckey = d.ckey "
        "WHERE d.hour >= ? AND NOT EXISTS (SELECT 1 FROM source_polls p WHERE p.source = k.source "
        "AND p.ts >= d.hour AND p.ts < d.hour + 3600) GROUP BY k.source",
        (since,),
    ).fetchall()
    for source, count, first in rows:
        problems.append(f"{path}: {count} rows of consumer_hourly are filed under consumers of source {source!r} "
                        f"in hours it never polled (first at {_when(first)})")  # fmt: skip
    return problems

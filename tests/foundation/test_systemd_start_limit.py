"""The unit gives up on a config that can never load instead of restart-looping (issue 12 item 2).

`tests/ops/test_systemd.py` checks the unit with `systemd-analyze`; this checks the arithmetic that makes the
start limit reachable, and that a broken config really makes `capacityd run` fail every start the same way.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

UNIT = Path(__file__).resolve().parents[2] / "systemd" / "capacityd.service"


def sections() -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    current = ""
    for line in UNIT.read_text().splitlines():
        line = line.strip()
        if line.startswith("[") and line.endswith("]"):
            current = line[1:-1]
        elif line and not line.startswith(("#", ";")) and "=" in line:
            key, _, value = line.partition("=")
            out.setdefault(current, {})[key.strip()] = value.strip()
    return out


def seconds(value: str) -> float:
    units = {"ms": 0.001, "s": 1, "min": 60, "m": 60, "h": 3600}
    for suffix, factor in units.items():
        if value.endswith(suffix) and value[: -len(suffix)].replace(".", "").isdigit():
            return float(value[: -len(suffix)]) * factor
    return float(value)


def test_start_limit_is_in_unit_section_and_reachable_by_the_restart_policy():
    unit = sections()
    assert "StartLimitIntervalSec" in unit["Unit"] and "StartLimitBurst" in unit["Unit"]
    assert "StartLimitIntervalSec" not in unit["Service"]  # [Service] placement is ignored by modern systemd
    assert unit["Service"]["Restart"] == "on-failure"
    burst = int(unit["Unit"]["StartLimitBurst"])
    window = seconds(unit["Unit"]["StartLimitIntervalSec"])
    restart = seconds(unit["Service"]["RestartSec"])
    assert 2 <= burst <= 10
    # a start that fails at once (config error) takes about RestartSec: the burst must fit in the window
    assert burst * restart < window / 2, "the start limit can never be hit with this RestartSec"


def test_a_broken_config_fails_every_start_fast_and_identically(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("sources:\n  - {kind: libvirt, name: a, uri: 'test:///default', interval: 100000000d}\n")
    outputs = set()
    for _ in range(2):
        done = subprocess.run(
            [sys.executable, "-m", "collector.app.cli", "run", "-c", str(config)],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ},
        )
        assert done.returncode == 1  # Restart=on-failure retries; the start limit stops it
        outputs.add(done.stderr)
    assert len(outputs) == 1 and "sources[0].interval" in outputs.pop()

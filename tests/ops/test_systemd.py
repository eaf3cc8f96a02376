"""The systemd unit: `systemd-analyze verify` clean and `systemd-analyze security` exposure at most 2.0."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from .conftest import REPO, require_binary

UNIT = REPO / "systemd" / "capacityd.service"
MAX_EXPOSURE = 2.0


def unit_settings() -> dict[str, list[str]]:
    """Directive -> values (a directive may repeat), comments dropped."""
    settings: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        key, _, value = line.partition("=")
        settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def exec_start_binary() -> str:
    return unit_settings()["ExecStart"][0].split()[0]


def fake_root(tmp_path: Path) -> Path:
    """A root with the unit, systemd's own units and the commands the unit runs, for `verify --root`.

    The ExecStart binary is a launcher of this checkout's capacityd (the real CLI), so verify checks
    that the command exists and is executable where the unit says it is.
    """
    root = tmp_path / "root"
    (root / "etc/systemd/system").mkdir(parents=True)
    shutil.copy(UNIT, root / "etc/systemd/system/capacityd.service")
    shutil.copytree("/lib/systemd/system", root / "usr/lib/systemd/system", symlinks=True)
    binary = root / exec_start_binary().lstrip("/")
    binary.parent.mkdir(parents=True)
    binary.write_text(f'#!/bin/sh\nexec {REPO}/.venv/bin/python -m collector.app.cli "$@"\n')
    binary.chmod(0o755)
    (root / "bin").mkdir()
    shutil.copy("/bin/kill", root / "bin/kill")
    return root


def test_unit_has_the_required_hardening() -> None:
    settings = unit_settings()
    expected = {
        "Type": "notify",
        "DynamicUser": "yes",
        "StateDirectory": "capacityd",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "NoNewPrivileges": "yes",
        "CapabilityBoundingSet": "",
        "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6",
        "ExecReload": "/bin/kill -HUP $MAINPID",
        "EnvironmentFile": "-/etc/capacityd/env",
        "Environment": "MALLOC_ARENA_MAX=2",  # flat RSS (collector/app/memory.py)
    }
    for key, value in expected.items():
        assert value in settings.get(key, []), f"{key}={value} missing from {UNIT}"
    assert "PYTHONMALLOC=malloc" in settings["Environment"]  # no re-exec under systemd (collector/app/memory.py)
    assert "GLIBC_TUNABLES=glibc.malloc.tcache_count=0" in settings["Environment"]
    assert "@system-service" in settings["SystemCallFilter"]


def test_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = require_binary("systemd-analyze", "systemd")
    root = fake_root(tmp_path)
    result = subprocess.run(
        [analyze, "verify", f"--root={root}", "--man=no", "capacityd.service"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr
    # The check can fail: a unit with a broken directive is reported.
    broken = root / "etc/systemd/system/capacityd.service"
    broken.write_text(broken.read_text().replace("Type=notify", "Type=notifyy"))
    result = subprocess.run(
        [analyze, "verify", f"--root={root}", "--man=no", "capacityd.service"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "notifyy" in result.stderr


def exposure(unit: Path) -> tuple[float, str]:
    analyze = require_binary("systemd-analyze", "systemd")
    result = subprocess.run(
        [analyze, "security", "--offline=yes", "--no-pager", str(unit)], capture_output=True, text=True, timeout=120
    )
    match = re.search(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)", result.stdout + result.stderr)
    assert match, f"no exposure level in systemd-analyze output:\n{result.stdout}\n{result.stderr}"
    return float(match.group(1)), result.stdout


def test_security_exposure_at_most_2() -> None:
    score, report = exposure(UNIT)
    print(f"systemd-analyze security --offline=yes: {score}")
    assert score <= MAX_EXPOSURE, report


def test_exposure_parser_sees_a_weaker_unit(tmp_path: Path) -> None:
    """Guards the parser: the same unit without its sandbox must score worse."""
    weak = tmp_path / "capacityd.service"
    kept = [
        line
        for line in UNIT.read_text().splitlines()
        if not line.startswith(("Protect", "Private", "SystemCall", "Restrict", "CapabilityBoundingSet"))
    ]
    weak.write_text("\n".join(kept) + "\n")
    score, _ = exposure(weak)
    assert score > exposure(UNIT)[0] + 2


def test_env_example_holds_no_values() -> None:
    """The example documents variables; a filled-in secret must never be committed."""
    for number, line in enumerate((REPO / "systemd/capacityd.env.example").read_text().splitlines(), 1):
        if line and not line.startswith("#"):
            pytest.fail(f"capacityd.env.example line {number}: only comments belong in the example: {line!r}")


MDWE_PROBE = """
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
if libc.prctl(65, 1, 0, 0, 0) != 0:  # PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN
    sys.exit("PR_SET_MDWE failed: " + os.strerror(ctypes.get_errno()))
import mmap
try:
    mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    sys.exit("W+X mapping allowed: MDWE is not in force")
except PermissionError:
    pass
import numpy as np
from statsforecast.models import MSTL, AutoETS
series = np.sin(np.arange(24 * 21) / 24 * 2 * np.pi) + np.arange(24 * 21) * 0.01 + 10
MSTL(season_length=[24, 168], trend_forecaster=AutoETS(model="ZZN")).fit(series).predict(h=24, level=[80])
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
figure, axes = plt.subplots()
axes.plot(series)
figure.savefig(os.devnull, format="png")
import libvirt
libvirt.openReadOnly("test:///default").close()
import bcrypt
assert bcrypt.checkpw(b"x", bcrypt.hashpw(b"x", bcrypt.gensalt(4)))
import collector.app.cli, collector.app.daemon, exporters.prometheus.http
import collector.analyses.forecast.models, collector.analyses.headroom.model
import kubernetes, openstack, pyarrow, sqlalchemy
print("ok")
"""


def test_runs_under_memory_deny_write_execute() -> None:
    """The unit sets MemoryDenyWriteExecute=yes: prove the heavy dependencies (statsforecast, matplotlib,
    libvirt, bcrypt, pyarrow) work without writable+executable memory, using the kernel's own switch
    (PR_SET_MDWE, Linux >= 6.3), the same policy systemd applies."""
    result = subprocess.run(
        [str(REPO / ".venv/bin/python"), "-c", MDWE_PROBE], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stdout + result.stderr
    assert "MemoryDenyWriteExecute=yes" in UNIT.read_text()

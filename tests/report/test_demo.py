"""The real demo estate end to end: `capacityd demo` (libvirt test driver, Nova/Placement and
Kubernetes stand-ins, real daemon and history) writes its weekly report; Chromium opens it.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.report.chromium import probe_images
from tests.report.conftest import free_port


@pytest.mark.timeout(420)
def test_the_demo_writes_a_report_that_renders(tmp_path):
    workdir = tmp_path / "demo"
    command = [
        sys.executable,
        "-m",
        "collector.app.cli",
        "demo",
        "--listen",
        f"127.0.0.1:{free_port()}",
        "--state-dir",
        str(workdir),
        "--duration",
        "360",
    ]
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
        start_new_session=True,
    )
    report = workdir / "report" / "report.html"
    output: list[str] = []
    try:
        deadline = time.monotonic() + 360
        assert process.stdout is not None
        os.set_blocking(process.stdout.fileno(), False)
        while time.monotonic() < deadline and process.poll() is None:
            line = process.stdout.readline()
            if line:
                output.append(line)
                if "wrote the weekly report" in line:
                    break
            else:
                time.sleep(0.5)
        assert report.exists(), "the demo wrote no report:\n" + "".join(output[-40:])
        # The demo prints the exact `capacityd forecast` command to try against it: run it while it serves.
        [hint] = [line for line in output if "try, in another terminal: " in line]
        words = shlex.split(hint.split("try, in another terminal: ", 1)[1])
        assert words[0] == "capacityd"
        tried = subprocess.run(
            [sys.executable, "-m", "collector.app.cli", *words[1:]],
            capture_output=True,
            text=True,
            cwd=Path(__file__).resolve().parents[2],
            timeout=300,
        )
        assert tried.returncode == 0, tried.stderr[-2000:]
        exhaustion = tried.stdout.split("== exhaustion ==", 1)[1]
        assert "with the what-if" in exhaustion and re.search(r"\d{4}-\d\d-\d\d \[", exhaustion), tried.stdout
        assert "connected to" not in tried.stderr  # libvirt connection chatter stays at debug level
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
    html = report.read_text(encoding="utf-8")
    for heading in ("Summary", "Headroom by flavor and pod shape", "Pools in detail", "Data quality"):
        assert heading in html, heading
    assert "demo-cloud" in html
    assert list(report.parent.glob("*-pools.csv"))
    probe = probe_images(report)
    assert probe.total >= 1 and not probe.broken, probe

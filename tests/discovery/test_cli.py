"""`capacityd check-config --show-targets` and `capacityd once --source NAME --target HOST` (real CLI process)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.discovery.conftest import write_node


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "collector.app.cli", *args], capture_output=True, text=True, timeout=120
    )


def _config(tmp_path: Path) -> Path:
    nodes = tmp_path / "nodes"
    nodes.mkdir()
    for host in ("kvm-1", "kvm-2"):
        write_node(nodes, host)
    (tmp_path / "sd.json").write_text(
        json.dumps(
            [
                {"targets": ["kvm-1"], "labels": {"pool": "az1"}},
                {"targets": ["kvm-2"], "labels": {"pool": "az2", "disabled": "true"}},
            ]
        )
    )
    (tmp_path / "broken.json").write_text("{}")
    config = tmp_path / "capacityd.yaml"
    config.write_text(f"""
state_dir: {tmp_path / "state"}
sources:
  - kind: libvirt
    name: fleet
    discover: {{file_sd: ["{tmp_path}/*.json"], uri: "test://{nodes}/{{target}}.xml"}}
  - kind: libvirt
    name: listed
    uri: "qemu+ssh://ops:s3cret@kvm-9/system"
""")
    return config


def test_check_config_shows_targets_and_flags_a_broken_file(tmp_path: Path) -> None:
    result = _cli("check-config", "--show-targets", str(_config(tmp_path)))
    lines = result.stdout.splitlines()
    assert result.returncode == 1  # a broken file_sd file is an error an operator must see
    assert any(line.split()[:4] == ["fleet", "kvm-1", "az1", "active"] for line in lines)
    assert any(line.split()[:4] == ["fleet", "kvm-2", "az2", "disabled"] for line in lines)
    assert any("broken.json" in line and "expected a list" in line for line in lines)
    assert "s3cret" not in result.stdout and "ops:***@kvm-9" in result.stdout


def test_once_polls_exactly_one_target(tmp_path: Path) -> None:
    config = _config(tmp_path)
    (tmp_path / "broken.json").unlink()
    result = _cli("once", "-c", str(config), "--source", "fleet", "--target", "kvm-2", "--format", "json")
    assert result.returncode == 0, result.stderr
    frames = json.loads(result.stdout)
    assert {row["host"] for row in frames["hosts"]} == {"kvm-2"}
    assert [row["schedulable"] for row in frames["hosts"]] == [False]
    assert {row["host"] for row in frames["consumers"]} == {"kvm-2"}
    targets = {row["target"]: row for row in frames["targets"]}
    assert targets["kvm-2"]["up"] is True and targets["kvm-1"]["polls_total"] == 0

    missing = _cli("once", "-c", str(config), "--source", "fleet", "--target", "kvm-7")
    assert missing.returncode == 2 and "no target 'kvm-7'" in missing.stderr and "kvm-1" in missing.stderr
    plain = _cli("once", "-c", str(config), "--source", "listed", "--target", "x")
    assert plain.returncode == 2 and "--target needs `discover:`" in plain.stderr

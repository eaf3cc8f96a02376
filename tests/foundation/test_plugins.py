"""Plugins by entry points: a third party's package adds a source kind (and its settings) without touching capacityd,
and a broken plugin stops the CLI with its name instead of going missing."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "examples" / "acme_source.py"


def install_fake_distribution(root: Path, name: str, entry_points: str, modules: dict[str, str]) -> None:
    """A minimal installed distribution (dist-info + modules) on a path entry, as pip would leave it."""
    dist = root / f"{name}-0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(textwrap.dedent(entry_points))
    for module, text in modules.items():
        (root / f"{module}.py").write_text(text)


def run_cli(*args: str, path: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(path), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run(
        [sys.executable, "-m", "collector", *args], capture_output=True, text=True, env=env, timeout=120
    )


def test_a_third_party_source_is_configured_polled_and_exported(tmp_path: Path) -> None:
    install_fake_distribution(
        tmp_path / "site",
        "acme-capacity",
        """
        [capacityd.sources]
        acme = acme_source:AcmeSourceConfig
        """,
        {"acme_source": EXAMPLE.read_text()},
    )
    config = tmp_path / "capacityd.yaml"
    config.write_text(
        textwrap.dedent(f"""
        state_dir: {tmp_path / "state"}
        sources:
          - kind: acme
            name: rack-7
            hosts: 3
            cores_per_host: 48
    """)
    )
    checked = run_cli("check-config", str(config), path=tmp_path / "site")
    assert checked.returncode == 0, checked.stderr
    assert "rack-7 (acme)" in checked.stdout

    polled = run_cli("once", "-c", str(config), "--format", "json", "--no-history", path=tmp_path / "site")
    assert polled.returncode == 0, polled.stderr
    assert "acme-host-2" in polled.stdout

    wrong = config.read_text().replace("cores_per_host: 48", "cores_per_hots: 48")
    config.write_text(wrong)
    rejected = run_cli("check-config", str(config), path=tmp_path / "site")
    assert rejected.returncode == 1
    assert "sources[0].cores_per_hots: unknown key" in rejected.stderr


def test_an_unknown_kind_names_the_registered_ones(tmp_path: Path) -> None:
    config = tmp_path / "capacityd.yaml"
    config.write_text("sources:\n  - kind: acme\n    name: rack-7\n")
    rejected = run_cli("check-config", str(config), path=tmp_path)
    assert rejected.returncode == 1
    assert "sources[0].kind: unknown kind 'acme'; expected one of 'libvirt', 'openstack', 'kubernetes'" in (
        rejected.stderr
    )


@pytest.mark.parametrize("group", ["capacityd.sources", "capacityd.commands"])
def test_a_broken_plugin_fails_loudly_with_its_name(tmp_path: Path, group: str) -> None:
    install_fake_distribution(
        tmp_path / "site",
        "broken-plugin",
        f"""
        [{group}]
        broken = broken_plugin:Thing
        """,
        {"broken_plugin": "import a_module_that_does_not_exist\n"},
    )
    config = tmp_path / "capacityd.yaml"
    config.write_text("sources: []\n")
    result = run_cli("check-config", str(config), path=tmp_path / "site")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr, result.stderr
    assert "'broken'" in result.stderr and "broken_plugin:Thing" in result.stderr
    assert "a_module_that_does_not_exist" in result.stderr

"""The config contract: shape, unknown keys, error locations, secrets never echoed."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from datetime import timedelta
from pathlib import Path

import pytest

from collector.app.config import load_config, parse_config
from collector.contract.settings import ConfigError, parse_duration


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "capacityd.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def test_the_documented_shape_loads(tmp_path):
    config = load_config(
        write(
            tmp_path,
            """
        listen: 127.0.0.1:9847
        state_dir: /var/lib/capacityd
        sources:
          - kind: libvirt
            name: kvm-a
            uri: qemu+ssh://root@kvm-a/system
            interval: 60s
    """,
        )
    )
    (source,) = config.sources
    assert source.kind == "libvirt" and source.name == "kvm-a"
    assert source.interval == timedelta(seconds=60)
    assert source.effective_timeout == timedelta(seconds=48)
    assert config.listen_host_port == ("127.0.0.1", 9847)


@pytest.mark.parametrize(
    ("text", "seconds"), [("90s", 90), ("5m", 300), ("1h", 3600), ("7d", 604800), ("250ms", 0.25), (30, 30)]
)
def test_durations(text, seconds):
    assert parse_duration(text).total_seconds() == seconds


@pytest.mark.parametrize("bad", ["", "5 parsecs", "-1s", "0s", True])
def test_bad_durations(bad):
    with pytest.raises(ValueError):
        parse_duration(bad)


def test_every_error_is_reported_with_its_location():
    with pytest.raises(ConfigError) as caught:
        parse_config(
            {
                "listen": "nowhere",
                "colour": "blue",
                "sources": [
                    {"kind": "libvirt", "name": "a", "uri": "test:///default"},
                    {"kind": "libvirt", "name": "b", "uri": "test:///default", "intervall": "5s"},
                    {"kind": "libvirt", "name": "c", "uri": "no-scheme"},
                    {"kind": "zookeeper", "name": "d"},
                    {"kind": "libvirt", "name": "a", "uri": "test:///default"},
                ],
            }
        )
    errors = caught.value.errors
    assert "listen: Value error, listen must be HOST:PORT, e.g. 127.0.0.1:9847 or [::]:9847" in errors
    assert "colour: unknown key" in errors
    assert "sources[1].intervall: unknown key" in errors
    assert any(e.startswith("sources[2].uri: ") for e in errors)
    assert "sources[3].kind: unknown kind 'zookeeper'; expected one of 'libvirt', 'openstack', 'kubernetes'" in errors
    assert "sources[4].name: 'a' is already used by sources[0]" in errors
    assert len(errors) == 6


def test_duplicate_source_names_are_refused():
    with pytest.raises(ConfigError, match="used twice"):
        parse_config({"sources": [{"kind": "libvirt", "name": "a", "uri": "test:///default"}] * 2})


def test_yaml_syntax_error_names_line(tmp_path):
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, "sources:\n  - kind: libvirt\n    name: [unclosed\n"))
    assert caught.value.errors[0].startswith("line ")


def test_check_config_cli_prints_errors_without_values(tmp_path):
    secret = "hunter2-very-secret"
    path = write(
        tmp_path,
        f"""
        sources:
          - kind: openstack
            cloud: prod
            password: {secret}
          - kind: libvirt
            name: kvm
            uri: nope
    """,
    )
    done = subprocess.run(
        [sys.executable, "-m", "collector.app.cli", "check-config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert "sources[0].password: unknown key" in done.stderr
    assert "sources[1].uri:" in done.stderr
    assert secret not in done.stderr + done.stdout


def test_check_config_cli_ok(tmp_path):
    path = write(tmp_path, "sources: [{kind: libvirt, name: kvm, uri: 'test:///default'}]\n")
    done = subprocess.run(
        [sys.executable, "-m", "collector.app.cli", "check-config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "kvm (libvirt)" in done.stdout

"""Target producers on bad and edge input: file_sd files, URI templates, kubeconfig contexts, config errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from collector.app.config import parse_config
from collector.contract.settings import ConfigError
from collector.sources.base import SourceError
from collector.sources.discovery.file_sd import FileSD, FileSDError, parse_groups
from collector.sources.discovery.kubeconfig import context_names, context_targets, kubeconfig_files
from collector.sources.discovery.targets import render


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("{}", "expected a list"),
        ('[{"labels": {}}]', "group 0 has no `targets` list"),
        ('[{"targets": ["a"], "labelz": {}}]', "unknown key(s) ['labelz']"),
        ('[{"targets": ["a"], "labels": {"pool": 3}}]', "labels must map names to strings"),
        ('[{"targets": [""]}]', "non-empty string"),
        ("[{", "not valid JSON"),
    ],
)
def test_file_sd_errors_name_the_file_and_the_problem(text: str, problem: str) -> None:
    with pytest.raises(FileSDError) as error:
        parse_groups("/etc/sd/hosts.json", text)
    assert str(error.value).startswith("/etc/sd/hosts.json: ") and problem in str(error.value)


def test_file_sd_yaml_and_a_broken_file_keeps_its_previous_targets(tmp_path: Path) -> None:
    (tmp_path / "a.yml").write_text("- targets: [kvm-1, kvm-2]\n  labels: {pool: az1}\n")
    sd = FileSD([str(tmp_path / "*.yml")], "qemu+tls://{target}/system", "default")
    targets, _ = sd.scan()
    assert [(t.identity, t.uri, t.pool) for t in targets] == [
        ("kvm-1", "qemu+tls://kvm-1/system", "az1"),
        ("kvm-2", "qemu+tls://kvm-2/system", "az1"),
    ]
    (tmp_path / "a.yml").write_text("- targets: [kvm-1\n")
    again, _ = sd.scan()
    assert [t.identity for t in again] == ["kvm-1", "kvm-2"] and "a.yml" in next(iter(sd.errors))
    (tmp_path / "a.yml").unlink()
    assert sd.scan() == ([], []) and sd.errors == {}


def test_a_template_field_the_target_lacks_is_named() -> None:
    with pytest.raises(SourceError, match=r"uses \{rack\}"):
        render("qemu+tls://{target}.{rack}/system", {"target": "kvm-1"})


def test_discover_config_errors() -> None:
    def errors(discover: dict) -> str:
        with pytest.raises(ConfigError) as error:
            parse_config({"sources": [{"kind": "libvirt", "name": "kvm", "discover": discover}]})
        return "; ".join(error.value.errors)

    assert "exactly one of `from`" in errors({"uri": "qemu+tls://{target}/system"})
    assert "unknown field(s) ['rack']" in errors({"from": "nova", "uri": "qemu+tls://{rack}/system"})
    assert "not a valid template" in errors({"from": "nova", "uri": "qemu+tls://{target/system"})
    with pytest.raises(ConfigError, match="needs a uri, or discover"):
        parse_config({"sources": [{"kind": "libvirt", "name": "kvm"}]})


def test_kubeconfig_contexts_from_a_kubeconfig_list(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def kubeconfig(path: Path, *names: str) -> Path:
        path.write_text(yaml.safe_dump({"contexts": [{"name": n, "context": {}} for n in names]}))
        return path

    a = kubeconfig(tmp_path / "a", "prod-eu", "dev")
    b = kubeconfig(tmp_path / "b", "prod-us", "prod-eu")
    monkeypatch.setenv("KUBECONFIG", f"{a}:{b}")
    files = kubeconfig_files(None)
    assert context_names(files) == ["prod-eu", "dev", "prod-us"]
    assert [t.identity for t in context_targets(["prod-*"], files)[0]] == ["prod-eu", "prod-us"]
    assert len(context_targets(["*"], files)[0]) == 3
    with pytest.raises(SourceError, match="cannot read"):
        context_names([tmp_path / "missing"])

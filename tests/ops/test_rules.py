"""Prometheus rules: `promtool check rules` and `promtool test rules` clean; every alert has its runbook."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import yaml

from .conftest import REPO, require_binary

RULES = REPO / "dashboards" / "prometheus" / "capacityd.rules.yml"
RULE_TESTS = REPO / "dashboards" / "prometheus" / "capacityd.rules.test.yml"
ALERTS_DOC = REPO / "docs" / "alerts.md"
REQUIRED_ALERTS = {
    "CapacityHeadroomLow",
    "CapacityNPlusOneViolated",
    "CapacityExhaustionWithin30Days",
    "CapacityExhaustionWithin90Days",
    "CapacitydSourceDown",
    "CapacitydSourceStale",
    "CapacitydReportNotSent",
}


def promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [require_binary("promtool", "prometheus"), *args], cwd=cwd, capture_output=True, text=True, timeout=300
    )


def alerts() -> list[dict]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def test_promtool_check_rules() -> None:
    result = promtool("check", "rules", str(RULES), cwd=RULES.parent)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_test_rules() -> None:
    result = promtool("test", "rules", RULE_TESTS.name, cwd=RULE_TESTS.parent)
    assert result.returncode == 0, result.stdout + result.stderr


def test_rule_tests_catch_a_changed_threshold(tmp_path: Path) -> None:
    """The unit tests pin behaviour: moving the headroom threshold must make them fail."""
    suite = yaml.safe_load(RULE_TESTS.read_text())
    suite["tests"] = [test for test in suite["tests"] if test["name"].startswith("headroom low")]
    (tmp_path / RULE_TESTS.name).write_text(yaml.safe_dump(suite))
    shutil.copy(RULES, tmp_path / RULES.name)
    assert promtool("test", "rules", RULE_TESTS.name, cwd=tmp_path).returncode == 0
    (tmp_path / RULES.name).write_text(
        RULES.read_text().replace("(capacity_headroom_slots) < 5", "(capacity_headroom_slots) < 2")
    )
    result = promtool("test", "rules", RULE_TESTS.name, cwd=tmp_path)
    assert result.returncode != 0 and "CapacityHeadroomLow" in result.stdout + result.stderr


def anchors(markdown: str) -> set[str]:
    """GitHub-style heading anchors."""
    found = set()
    for heading in re.findall(r"^#{1,6}\s+(.+?)\s*$", markdown, flags=re.MULTILINE):
        slug = re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")
        found.add(slug)
    return found


def test_every_alert_has_annotations_and_a_runbook_section() -> None:
    doc_anchors = anchors(ALERTS_DOC.read_text())
    names = set()
    for rule in alerts():
        names.add(rule["alert"])
        annotations = rule.get("annotations", {})
        for key in ("summary", "description", "runbook_url"):
            assert annotations.get(key), f"{rule['alert']}: no {key}"
        assert rule.get("labels", {}).get("severity") in ("warning", "critical"), rule["alert"]
        url = annotations["runbook_url"]
        assert url.startswith("docs/alerts.md#"), url
        anchor = url.split("#", 1)[1]
        assert anchor == rule["alert"].lower() and anchor in doc_anchors, f"{url}: no such section in docs/alerts.md"
    assert names >= REQUIRED_ALERTS


def test_every_alert_is_unit_tested() -> None:
    tested = set(re.findall(r"alertname: (\w+)", RULE_TESTS.read_text()))
    assert {rule["alert"] for rule in alerts()} <= tested

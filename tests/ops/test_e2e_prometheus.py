"""End to end, without Grafana: a real Prometheus scrapes `capacityd demo`, and every query of every panel
of every dashboard (variables substituted with real values from their label_values queries) must return
data carrying the labels its legend shows. The same Prometheus loads capacityd.rules.yml, so every
recording and alerting rule is also evaluated against real data (rule health must be "ok").

Both processes are started here on loopback with free ports and killed by PID at the end.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from .conftest import REPO, free_port, require_binary
from .dashlint import panels

DASHBOARDS = REPO / "dashboards"
RULES = DASHBOARDS / "prometheus" / "capacityd.rules.yml"
SCRAPE_INTERVAL = 5
DEMO_READY_TIMEOUT = 300  # the demo starts its estate, backfills 8 weeks of history, polls, forecasts
SAMPLES_TIMEOUT = 120
RULES_TIMEOUT = 150  # two passes of the 1-minute recording group, plus margin
STACK_LIFETIME = 1200  # both processes exit by themselves after this long, whatever happens to the test
BUILTINS = {"__rate_interval": "1m", "__interval": "15s", "__range": "5m", "__range_s": "300"}
_LEGEND_LABEL_RE = re.compile(r"\{\{\s*(\w+)\s*\}\}")
_REGEX_SPECIALS = re.compile(r"([\\^$*+?.()|\[\]{}])")


def http_get(url: str, timeout: float = 10.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
        return 0, b""


def memory_deny_write_execute() -> None:
    """preexec_fn: the kernel's MDWE (Linux >= 6.3), the policy of the unit's MemoryDenyWriteExecute=yes,
    so the demo daemon proves the product needs no writable+executable memory."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(65, 1, 0, 0, 0) != 0:  # PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_MDWE) failed")


def stop(process: subprocess.Popen[bytes], name: str) -> None:
    """SIGTERM by PID, then SIGKILL by PID if it does not exit in time."""
    if process.poll() is not None:
        return
    os.kill(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
        print(f"{name} (pid {process.pid}) needed SIGKILL")


@dataclass
class Prometheus:
    base: str

    def api(self, path: str, **params: Any) -> Any:
        query = urllib.parse.urlencode(params, doseq=True)
        status, body = http_get(f"{self.base}/api/v1/{path}?{query}", timeout=30)
        assert status == 200, f"Prometheus {path} {params}: HTTP {status}: {body[:500]!r}"
        answer = json.loads(body)
        assert answer["status"] == "success", answer
        return answer["data"]

    def instant(self, expr: str) -> list[dict[str, Any]]:
        return self.api("query", query=expr)["result"]

    def range(self, expr: str, seconds: int = 120) -> list[dict[str, Any]]:
        end = time.time()
        return self.api("query_range", query=expr, start=end - seconds, end=end, step=SCRAPE_INTERVAL)["result"]

    def label_values(self, query: str) -> list[str]:
        """Grafana's `label_values(selector, label)` / `label_values(label)` through the label values API."""
        match = re.fullmatch(r"\s*label_values\((.*)\)\s*", query, flags=re.DOTALL)
        assert match, f"not a label_values query: {query}"
        inner = match.group(1)
        selector, _, label = inner.rpartition(",")
        params: dict[str, Any] = {"start": time.time() - 600, "end": time.time()}
        if selector.strip():
            params["match[]"] = selector.strip()
        return sorted(self.api(f"label/{label.strip()}/values", **params))


def substitute(text: str, values: dict[str, str], multi: dict[str, bool]) -> str:
    """Grafana's interpolation for Prometheus: multi-value variables are regex-escaped, others verbatim."""

    def replace(match: re.Match[str]) -> str:
        name = next(group for group in match.groups() if group)
        if name in BUILTINS:
            return BUILTINS[name]
        if name not in values:
            return match.group(0)
        value = values[name]
        return _REGEX_SPECIALS.sub(r"\\\\\1", value) if multi.get(name) and value != ".*" else value

    return re.sub(r"\$\{(\w+)(?::[\w-]+)?\}|\$(\w+)|\[\[(\w+)\]\]", replace, text)


@dataclass
class Stack:
    prometheus: Prometheus
    exposition: str = field(repr=False)
    """The demo's /metrics body when Prometheus started scraping."""


@dataclass
class Target:
    panel: str
    ref_id: str
    expr: str
    legend: str
    instant: bool


def targets_of(board: dict[str, Any]) -> list[Target]:
    found = []
    for panel in panels(board):
        for target in panel.get("targets", []):
            found.append(
                Target(
                    panel["title"],
                    target["refId"],
                    target["expr"],
                    target.get("legendFormat", ""),
                    bool(target.get("instant")) and not target.get("range"),
                )
            )
    return found


def run(
    prometheus: Prometheus, target: Target, values: dict[str, str], multi: dict[str, bool]
) -> tuple[str, list[dict[str, Any]]]:
    expr = substitute(target.expr, values, multi)
    result = prometheus.instant(expr) if target.instant else prometheus.range(expr)
    return expr, result


def legend_labels(legend: str, values: dict[str, str], multi: dict[str, bool]) -> list[str]:
    return _LEGEND_LABEL_RE.findall(substitute(legend, values, multi))


def has_data(result: list[dict[str, Any]], labels: list[str]) -> bool:
    return bool(result) and all(all(series["metric"].get(label) for label in labels) for series in result)


def uses(target: Target, variable: str) -> bool:
    return any(f"{form}" in target.expr for form in (f"${variable}", f"${{{variable}}}", f"[[{variable}]]"))


def choose_variables(prometheus: Prometheus, board: dict[str, Any]) -> tuple[dict[str, str], dict[str, bool]]:
    """Fill each variable, in order, with the real value from its query that lets the most targets return data."""
    variables = [v for v in board["templating"]["list"] if v["type"] in ("query", "custom")]
    multi = {v["name"]: bool(v.get("multi")) for v in variables}
    chosen: dict[str, str] = {}
    targets = targets_of(board)
    for position, variable in enumerate(variables):
        name = variable["name"]
        if variable["type"] == "custom":
            candidates = [value.strip() for value in variable["query"].split(",") if value.strip()]
        else:
            candidates = prometheus.label_values(substitute(variable["query"], chosen, multi))
        assert candidates, f"{board['uid']}: variable ${name} has no values (query {variable['query']!r})"
        # Later multi-value variables match everything (Grafana's "All"); targets that need a later
        # single-value variable cannot be tried yet and do not count.
        later = {v["name"]: ".*" for v in variables[position + 1 :] if multi[v["name"]]}
        unresolved = [v["name"] for v in variables[position + 1 :] if not multi[v["name"]]]
        relevant = [t for t in targets if uses(t, name) and not any(uses(t, other) for other in unresolved)]
        best, best_score = candidates[0], -1
        for candidate in candidates:
            trial = {**chosen, name: candidate, **later}
            score = sum(
                has_data(run(prometheus, t, trial, multi)[1], legend_labels(t.legend, trial, multi)) for t in relevant
            )
            if score > best_score:
                best, best_score = candidate, score
        chosen[name] = best
    return chosen, multi


# Series the demo estate cannot have, by construction: libvirt's test driver (the demo's hypervisors) fills
# no stats groups, so hypervisor-layer usage is unknown there and, by the schema's rule, absent rather than 0.
# Panels querying it must still run without error; the real values are covered against a real libvirtd + QEMU
# guest in tests/libvirt/test_real_libvirtd.py.
DEMO_UNMEASURABLE = ('capacity_resource_used{layer="hypervisor"',)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    prometheus_bin = require_binary("prometheus", "prometheus")
    workdir = tmp_path_factory.mktemp("e2e")
    demo_port, prometheus_port = free_port(), free_port()
    demo_log = (workdir / "demo.log").open("wb")
    demo = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "collector.app.cli",
            "demo",
            "--listen",
            f"127.0.0.1:{demo_port}",
            "--state-dir",
            str(workdir / "demo"),
            "--duration",
            str(STACK_LIFETIME),
        ],
        cwd=REPO,
        stdout=demo_log,
        stderr=subprocess.STDOUT,
        preexec_fn=memory_deny_write_execute,
    )
    prometheus_process: subprocess.Popen[bytes] | None = None
    try:
        metrics_url = f"http://127.0.0.1:{demo_port}/metrics"
        deadline = time.monotonic() + DEMO_READY_TIMEOUT
        body = b""
        while time.monotonic() < deadline:
            assert demo.poll() is None, (
                f"capacityd demo exited ({demo.returncode}):\n" + (workdir / "demo.log").read_text()[-4000:]
            )
            status, body = http_get(metrics_url)
            if status == 200 and b"\ncapacity_exhaustion_seconds{" in body:
                break
            time.sleep(2)
        else:
            pytest.fail(
                f"capacityd demo did not serve forecasts within {DEMO_READY_TIMEOUT}s; log:\n"
                + (workdir / "demo.log").read_text()[-4000:]
            )
        (workdir / "capacityd.rules.yml").write_text(RULES.read_text())
        config = {
            "global": {"scrape_interval": f"{SCRAPE_INTERVAL}s", "evaluation_interval": f"{SCRAPE_INTERVAL}s"},
            "rule_files": [str(workdir / "capacityd.rules.yml")],
            "scrape_configs": [{"job_name": "capacityd", "static_configs": [{"targets": [f"127.0.0.1:{demo_port}"]}]}],
        }
        (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
        prometheus_log = (workdir / "prometheus.log").open("wb")
        # Under coreutils `timeout`: Prometheus stops by itself even if this test is killed before cleanup
        # (`timeout` passes our SIGTERM on to it).
        prometheus_process = subprocess.Popen(
            [
                require_binary("timeout", "coreutils"),
                "--kill-after=10",
                str(STACK_LIFETIME),
                prometheus_bin,
                f"--config.file={workdir / 'prometheus.yml'}",
                f"--storage.tsdb.path={workdir / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{prometheus_port}",
                "--storage.tsdb.retention.time=1d",
                "--log.level=warn",
            ],
            stdout=prometheus_log,
            stderr=subprocess.STDOUT,
        )
        prometheus = Prometheus(f"http://127.0.0.1:{prometheus_port}")
        deadline = time.monotonic() + SAMPLES_TIMEOUT
        while time.monotonic() < deadline:
            assert prometheus_process.poll() is None, (
                "prometheus exited:\n" + (workdir / "prometheus.log").read_text()[-4000:]
            )
            if http_get(f"{prometheus.base}/-/ready")[0] == 200:
                scrapes = prometheus.instant('count_over_time(up{job="capacityd"}[5m])')
                up = prometheus.instant('up{job="capacityd"}')
                if scrapes and float(scrapes[0]["value"][1]) >= 5 and up and up[0]["value"][1] == "1":
                    break
            time.sleep(1)
        else:
            pytest.fail(
                "Prometheus did not collect 5 scrapes of capacityd in time; log:\n"
                + (workdir / "prometheus.log").read_text()[-4000:]
            )
        time.sleep(2 * SCRAPE_INTERVAL)  # one more rule evaluation over real data
        yield Stack(prometheus, body.decode())
    finally:
        if prometheus_process is not None:
            stop(prometheus_process, "prometheus")
        stop(demo, "capacityd demo")
        demo_log.close()


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_promtool_check_metrics_on_the_demo_exposition(stack: Stack) -> None:
    exposition = stack.exposition
    result = subprocess.run(
        [require_binary("promtool", "prometheus"), "check", "metrics"],
        input=exposition,
        capture_output=True,
        text=True,
        timeout=60,
    )
    problems = sorted(set((result.stdout + result.stderr).splitlines()))
    assert result.returncode == 0 and not problems, "promtool check metrics:\n" + "\n".join(problems)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_rules_evaluate_cleanly_on_real_data(stack: Stack) -> None:
    prometheus = stack.prometheus
    # The recording group runs every minute at an offset Prometheus picks: its first pass can come before the
    # first scrape (healthy, but recording nothing). Wait for a pass over real data, bounded by two intervals.
    recorded_query = "layer_cloud_pool_resource:capacity_resource_allocatable:sum"
    deadline = time.monotonic() + RULES_TIMEOUT
    while True:
        groups = prometheus.api("rules")["groups"]
        rules = [rule for group in groups for rule in group["rules"]]
        evaluated = all(rule["health"] != "unknown" for rule in rules)
        if (evaluated and prometheus.instant(recorded_query)) or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert {g["name"] for g in groups} == {"capacityd.recording", "capacityd.capacity", "capacityd.collector"}
    for group in groups:
        for rule in group["rules"]:
            assert rule["health"] == "ok", f"{rule['name']}: health {rule['health']} {rule.get('lastError')}"
    recorded = prometheus.instant(recorded_query)
    assert recorded and all({"layer", "cloud", "pool", "resource"} <= set(s["metric"]) for s in recorded)


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize("dashboard", sorted(p.stem for p in DASHBOARDS.glob("*.json")))
def test_every_panel_query_returns_data(stack: Stack, dashboard: str) -> None:
    prometheus = stack.prometheus
    board = json.loads((DASHBOARDS / f"{dashboard}.json").read_text())
    values, multi = choose_variables(prometheus, board)
    print(f"{dashboard}: variables {values}")
    failures = []
    targets = targets_of(board)
    for target in targets:
        expr, result = run(prometheus, target, values, multi)
        labels = legend_labels(target.legend, values, multi)
        if not result and any(marker in expr for marker in DEMO_UNMEASURABLE):
            continue  # the query ran cleanly; the demo estate has nothing to measure (see DEMO_UNMEASURABLE)
        if not result:
            failures.append(f"{target.panel} [{target.ref_id}]: no data\n    {expr}")
        elif not has_data(result, labels):
            missing = sorted({label for series in result for label in labels if not series["metric"].get(label)})
            failures.append(f"{target.panel} [{target.ref_id}]: series lack legend labels {missing}\n    {expr}")
    assert not failures, f"{dashboard} ({len(targets)} targets, variables {values}):\n" + "\n".join(failures)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_the_panel_check_can_fail(stack: Stack) -> None:
    """A typo in a metric name, or a legend naming a label the query aggregates away, is caught."""
    prometheus = stack.prometheus
    typo = Target("typo", "A", 'sum by (pool) (capacity_resource_allocatd{cloud=~"$cloud"})', "{{pool}}", False)
    _, result = run(prometheus, typo, {"cloud": ".*"}, {"cloud": True})
    assert not has_data(result, ["pool"])
    dropped = Target("dropped", "A", "sum by (cloud) (capacity_resource_allocatable)", "{{cloud}} {{pool}}", True)
    _, result = run(prometheus, dropped, {}, {})
    assert result and not has_data(result, legend_labels(dropped.legend, {}, {}))
    good = Target("good", "A", "sum by (cloud, pool) (capacity_resource_allocatable)", "{{cloud}} {{pool}}", True)
    _, result = run(prometheus, good, {}, {})
    assert has_data(result, legend_labels(good.legend, {}, {}))


def exposition_contract(exposition: str) -> set[str]:
    """`family NAME TYPE` and `sample NAME LABEL,NAMES` lines of an exposition (what users' queries depend on)."""
    from prometheus_client.parser import text_string_to_metric_families

    rows = {f"family {m.group(1)} {m.group(2)}" for m in re.finditer(r"^# TYPE (\S+) (\S+)$", exposition, re.M)}
    for family in text_string_to_metric_families(exposition):
        rows.update(f"sample {s.name} {','.join(sorted(s.labels)) or '-'}" for s in family.samples)
    return rows


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_demo_exposition_keeps_every_family_and_label_set(stack: Stack) -> None:
    """Refactors never drop a family or change a label set users query (tests/fixtures/demo-metrics-contract.txt)."""
    golden_path = Path(__file__).resolve().parents[1] / "fixtures" / "demo-metrics-contract.txt"
    golden = {line for line in golden_path.read_text().splitlines() if line and not line.startswith("#")}
    missing = sorted(golden - exposition_contract(stack.exposition))
    assert not missing, "the demo's /metrics lost families or label sets:\n" + "\n".join(missing)


def test_the_exposition_contract_check_can_fail() -> None:
    exposition = '# TYPE capacity_headroom_slots gauge\ncapacity_headroom_slots{cloud="a",pool="p"} 1\n'
    rows = exposition_contract(exposition)
    assert rows == {"family capacity_headroom_slots gauge", "sample capacity_headroom_slots cloud,pool"}
    assert "sample capacity_headroom_slots cloud,layer,pool,pool_kind,shape" not in rows

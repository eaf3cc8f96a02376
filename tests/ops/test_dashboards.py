"""Dashboards as code: committed JSON equals the generator's output and passes the structural checks."""

from __future__ import annotations

import copy
import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from .conftest import REPO
from .dashlint import lint, lint_all, panels, variables_used

DASHBOARDS = REPO / "dashboards"
EXPECTED = {
    "capacity-overview",
    "openstack-pools",
    "kubernetes-clusters",
    "hypervisor-detail",
    "forecasts",
    "collector-health",
}


def load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("capacityd_dashboards_generate", DASHBOARDS / "generate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def committed() -> dict[str, dict[str, Any]]:
    return {path.stem: json.loads(path.read_text()) for path in sorted(DASHBOARDS.glob("*.json"))}


def test_committed_json_equals_generator_output() -> None:
    rendered = load_generator().render_all()
    on_disk = {path.name: path.read_text() for path in DASHBOARDS.glob("*.json")}
    assert set(rendered) == set(on_disk), "dashboards/*.json and the generator disagree on the file list"
    for name, text in rendered.items():
        assert on_disk[name] == text, f"{name} is out of date: run .venv/bin/python dashboards/generate.py"


def test_generator_check_mode(tmp_path: Path) -> None:
    generator = load_generator()
    assert generator.main(["--output", str(tmp_path)]) == 0
    assert generator.main(["--check", "--output", str(tmp_path)]) == 0
    (tmp_path / "forecasts.json").write_text("{}")
    assert generator.main(["--check", "--output", str(tmp_path)]) == 1


def test_every_dashboard_we_promise_exists() -> None:
    assert set(committed()) == EXPECTED


def test_structural_checks() -> None:
    problems = lint_all(committed())
    assert not problems, "\n".join(problems)


def test_template_variables() -> None:
    boards = committed()
    names = {name: {v["name"] for v in board["templating"]["list"]} for name, board in boards.items()}
    assert {"datasource", "cloud", "cluster"} <= names["capacity-overview"]
    assert {"datasource", "cloud", "pool"} <= names["openstack-pools"]
    assert {"datasource", "cluster", "pool"} <= names["kubernetes-clusters"]
    assert {"datasource", "cloud", "pool", "host"} <= names["hypervisor-detail"]
    assert {"datasource", "cloud", "pool", "resource", "basis"} <= names["forecasts"]
    for board in boards.values():  # every declared variable is used somewhere (no dead dropdowns)
        text = json.dumps([p for p in panels(board)]) + json.dumps(board["templating"]["list"])
        for variable in board["templating"]["list"]:
            assert variable["name"] in variables_used(text), f"{board['uid']}: ${variable['name']} never used"


def test_required_views() -> None:
    boards = committed()
    types = {name: {p["type"] for p in panels(board)} for name, board in boards.items()}
    assert "heatmap" in types["openstack-pools"]  # the per-host heat map
    forecast_exprs = " ".join(t["expr"] for p in panels(boards["forecasts"]) for t in p.get("targets", []))
    for quantile in ("0.1", "0.5", "0.9"):
        assert f'quantile="{quantile}"' in forecast_exprs
    band = next(p for p in panels(boards["forecasts"]) if p["title"].startswith("Time to exhaustion"))
    fill = [
        prop for o in band["fieldConfig"]["overrides"] for prop in o["properties"] if prop["id"] == "custom.fillBelowTo"
    ]
    assert fill, "the forecast panel must shade its interval band"
    overview = " ".join(t["expr"] for p in panels(boards["capacity-overview"]) for t in p.get("targets", []))
    for metric in ("capacity_headroom_slots", "capacity_headroom_slots_after_failure", "capacity_exhaustion_seconds"):
        assert metric in overview


def broken(board: dict[str, Any], change: str) -> dict[str, Any]:
    board = copy.deepcopy(board)
    real = [p for p in board["panels"] if p["type"] != "row"]
    if change == "duplicate id":
        real[1]["id"] = real[0]["id"]
    elif change == "off grid":
        real[0]["gridPos"]["x"] = 20
    elif change == "empty expr":
        real[0]["targets"][0]["expr"] = " "
    elif change == "undeclared variable":
        real[0]["targets"][0]["expr"] += " + on() vector($nosuchvar)"
    elif change == "hard-coded datasource":
        real[0]["datasource"] = {"type": "prometheus", "uid": "P1809F7CD0C75ACF3"}
    elif change == "long uid":
        board["uid"] = "x" * 41
    return board


@pytest.mark.parametrize(
    "change", ["duplicate id", "off grid", "empty expr", "undeclared variable", "hard-coded datasource", "long uid"]
)
def test_the_checks_catch_what_they_claim(change: str) -> None:
    board = committed()["capacity-overview"]
    assert lint(board) == []
    assert lint(broken(board, change)), f"lint missed: {change}"
    assert lint_all({"a": board, "b": copy.deepcopy(board)}), "lint_all missed a duplicate uid"


def test_provisioning_files() -> None:
    provider = yaml.safe_load((DASHBOARDS / "provisioning" / "dashboards" / "capacityd.yaml").read_text())
    assert provider["apiVersion"] == 1
    (entry,) = provider["providers"]
    assert entry["type"] == "file" and entry["options"]["path"]
    datasource = yaml.safe_load((DASHBOARDS / "provisioning" / "datasources" / "prometheus.yaml").read_text())
    (source,) = datasource["datasources"]
    assert source["type"] == "prometheus" and source["access"] == "proxy" and source["url"]

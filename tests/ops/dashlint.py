"""Structural checks on Grafana dashboard JSON, after the rules of grafana/dashboard-linter and the
conventions of the Grafana mixins (the linter itself is Go and cannot run here).

`lint(dashboard)` returns one message per problem; `lint_all(dashboards)` adds cross-dashboard rules
(uids unique).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from typing import Any

GRID_WIDTH = 24
MAX_UID_LENGTH = 40
DATASOURCE_VARIABLE = "${datasource}"
# Grafana's global variables: always defined.
BUILTIN_VARIABLES = {
    "__interval",
    "__interval_ms",
    "__rate_interval",
    "__rate_interval_ms",
    "__range",
    "__range_s",
    "__range_ms",
    "__from",
    "__to",
    "__dashboard",
    "__org",
    "__user",
    "__timeFilter",
    "__name",
    "timeFilter",
}
_VARIABLE_RE = re.compile(r"\$\{(\w+)(?::[\w-]+)?\}|\$(\w+)|\[\[(\w+)(?::[\w-]+)?\]\]")


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, rows and panels nested in collapsed rows included."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def variables_used(text: str) -> set[str]:
    return {next(group for group in match.groups() if group) for match in _VARIABLE_RE.finditer(text)}


def _datasource_is_variable(datasource: Any) -> bool:
    if isinstance(datasource, str):
        return datasource in (DATASOURCE_VARIABLE, "$datasource")
    return isinstance(datasource, dict) and datasource.get("uid") in (DATASOURCE_VARIABLE, "$datasource")


def lint(dashboard: dict[str, Any]) -> list[str]:
    problems: list[str] = []
    uid = dashboard.get("uid")
    if not isinstance(uid, str) or not uid:
        problems.append("dashboard has no uid")
    elif len(uid) > MAX_UID_LENGTH or not re.fullmatch(r"[A-Za-z0-9_-]+", uid):
        problems.append(f"uid {uid!r}: at most {MAX_UID_LENGTH} characters of [A-Za-z0-9_-]")
    if not dashboard.get("title"):
        problems.append("dashboard has no title")

    declared = {v.get("name") for v in dashboard.get("templating", {}).get("list", [])}
    datasource_vars = [v for v in dashboard.get("templating", {}).get("list", []) if v.get("type") == "datasource"]
    if not any(v.get("name") == "datasource" and v.get("query") == "prometheus" for v in datasource_vars):
        problems.append("no `datasource` variable of type datasource (prometheus)")
    for variable in dashboard.get("templating", {}).get("list", []):
        name = variable.get("name")
        if variable.get("type") == "query":
            if not _datasource_is_variable(variable.get("datasource")):
                problems.append(f"variable {name}: datasource is not ${{datasource}}")
            query = variable.get("query")
            text = query if isinstance(query, str) else str((query or {}).get("query", ""))
            if not text.strip():
                problems.append(f"variable {name}: empty query")
            for used in variables_used(text) - declared - BUILTIN_VARIABLES:
                problems.append(f"variable {name}: uses undeclared ${used}")

    ids = Counter(panel.get("id") for panel in panels(dashboard))
    for panel_id, count in ids.items():
        if panel_id is None or not isinstance(panel_id, int) or panel_id <= 0:
            problems.append(f"panel id {panel_id!r} is not a positive integer")
        elif count > 1:
            problems.append(f"panel id {panel_id} is used {count} times")

    occupied: dict[tuple[int, int], str] = {}
    for panel in panels(dashboard):
        title = panel.get("title") or f"panel {panel.get('id')}"
        grid = panel.get("gridPos") or {}
        x, y, w, h = (grid.get(k) for k in ("x", "y", "w", "h"))
        if not all(isinstance(v, int) for v in (x, y, w, h)):
            problems.append(f"{title}: gridPos incomplete: {grid}")
            continue
        if x < 0 or y < 0 or w <= 0 or h <= 0 or x + w > GRID_WIDTH:
            problems.append(f"{title}: gridPos {grid} outside the {GRID_WIDTH}-column grid")
        for cell_x in range(max(x, 0), min(x + w, GRID_WIDTH)):
            for cell_y in range(max(y, 0), y + h):
                if (cell_x, cell_y) in occupied and panel.get("type") != "row":
                    problems.append(f"{title}: overlaps {occupied[(cell_x, cell_y)]}")
                    break
                occupied[(cell_x, cell_y)] = title
            else:
                continue
            break
        if panel.get("type") == "row":
            continue
        if not panel.get("title"):
            problems.append(f"panel {panel.get('id')}: no title")
        if not _datasource_is_variable(panel.get("datasource")):
            problems.append(f"{title}: panel datasource is not ${{datasource}}")
        targets = panel.get("targets") or []
        if not targets:
            problems.append(f"{title}: no targets")
        ref_ids = Counter(t.get("refId") for t in targets)
        for ref_id, count in ref_ids.items():
            if not ref_id or count > 1:
                problems.append(f"{title}: refId {ref_id!r} missing or repeated")
        for target in targets:
            expr = target.get("expr")
            if not isinstance(expr, str) or not expr.strip():
                problems.append(f"{title}: target {target.get('refId')} has no expression")
                continue
            if "datasource" in target and not _datasource_is_variable(target["datasource"]):
                problems.append(f"{title}: target {target.get('refId')} datasource is not ${{datasource}}")
            for text in (expr, target.get("legendFormat") or ""):
                for used in variables_used(text) - declared - BUILTIN_VARIABLES:
                    problems.append(f"{title}: uses undeclared ${used}")
        for text in (panel.get("title") or "", panel.get("description") or ""):
            for used in variables_used(text) - declared - BUILTIN_VARIABLES:
                problems.append(f"{title}: uses undeclared ${used}")
    return problems


def lint_all(dashboards: dict[str, dict[str, Any]]) -> list[str]:
    problems = [f"{name}: {problem}" for name, board in dashboards.items() for problem in lint(board)]
    uids = Counter(board.get("uid") for board in dashboards.values())
    problems += [f"uid {uid!r} is used by {count} dashboards" for uid, count in uids.items() if count > 1]
    return problems

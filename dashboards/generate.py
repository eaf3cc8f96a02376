"""Grafana dashboards for capacityd, as code (grafana-foundation-sdk).

    .venv/bin/python dashboards/generate.py            # rewrite dashboards/*.json
    .venv/bin/python dashboards/generate.py --check    # exit 1 if a committed file is out of date

The JSON files are committed so operators can provision them without Python; tests/ops checks they
equal this script's output, passes the structural rules the Grafana community lints for, and runs
every panel query against a real Prometheus scraping `capacityd demo`.

Conventions every dashboard follows (and the tests enforce):
* the data source is the `$datasource` variable, everywhere (panels, targets, query variables);
* `cloud`, `cluster`, `pool` (and `host`, `resource`, `basis`, `source` where relevant) are
  template variables filled from `label_values(...)` of capacityd's own metrics;
* every target's legend names the labels it shows, and every query keeps those labels;
* panels are placed by a flow layout on Grafana's 24-column grid, ids are assigned in order.

Metric names are those of docs/metrics.md: `capacity_resource_{capacity,allocatable,allocated,used}`,
`capacity_consumers`, `capacity_headroom_slots[_after_failure]`, `capacity_exhaustion_seconds`,
`capacity_reclaimable`, `capacityd_source_*`, `capacityd_report_*`.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from grafana_foundation_sdk.builders import bargauge, dashboard, prometheus, stat, table, timeseries
from grafana_foundation_sdk.builders import common as common_builders
from grafana_foundation_sdk.builders import heatmap as heatmap_builders
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import dashboard as model
from grafana_foundation_sdk.models import heatmap as heatmap_models
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

OUTPUT_DIR = Path(__file__).resolve().parent
GRID_WIDTH = 24
DATASOURCE = model.DataSourceRef(type_val="prometheus", uid="${datasource}")
TAGS = ["capacityd"]
REF_IDS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
DAY = 86400


# -- building blocks ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Query:
    """One target: a PromQL expression and the legend naming the labels it shows."""

    expr: str
    legend: str
    instant: bool = False


def target(query: Query, ref_id: str, table_format: bool = False) -> prometheus.Dataquery:
    built = prometheus.Dataquery().expr(query.expr).legend_format(query.legend).ref_id(ref_id).datasource(DATASOURCE)
    built = built.instant() if query.instant or table_format else built.range()
    if table_format:
        built = built.format(PromQueryFormat.TABLE)
    return built


def with_targets(panel: Any, queries: Iterable[Query], table_format: bool = False) -> Any:
    for position, query in enumerate(queries):
        panel = panel.with_target(target(query, REF_IDS[position], table_format))
    return panel


def legend(
    placement: common.LegendPlacement = common.LegendPlacement.BOTTOM, calcs: list[str] | None = None
) -> common_builders.VizLegendOptions:
    options = (
        common_builders.VizLegendOptions()
        .show_legend(True)
        .placement(placement)
        .display_mode(common.LegendDisplayMode.TABLE if calcs else common.LegendDisplayMode.LIST)
    )
    if calcs:
        options = options.calcs(calcs)
    return options


def graph(
    title: str,
    description: str,
    queries: list[Query],
    unit: str = "short",
    *,
    stack: bool = False,
    minimum: float | None = 0,
    maximum: float | None = None,
    fill: int = 10,
    calcs: list[str] | None = None,
) -> timeseries.Panel:
    panel = (
        timeseries.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .unit(unit)
        .fill_opacity(fill)
        .line_width(1)
        .legend(legend(calcs=calcs))
    )
    if minimum is not None:
        panel = panel.min(minimum)
    if maximum is not None:
        panel = panel.max(maximum)
    if stack:
        panel = panel.stacking(common_builders.StackingConfig().mode(common.StackingMode.NORMAL))
    return with_targets(panel, queries)


def thresholds(*steps: tuple[float | None, str]) -> dashboard.ThresholdsConfig:
    return (
        dashboard.ThresholdsConfig()
        .mode(model.ThresholdsMode.ABSOLUTE)
        .steps([model.Threshold(value=value, color=color) for value, color in steps])
    )


def single_stat(
    title: str,
    description: str,
    queries: list[Query],
    unit: str = "short",
    steps: tuple[tuple[float | None, str], ...] = ((None, "green"),),
) -> stat.Panel:
    panel = (
        stat.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .unit(unit)
        .thresholds(thresholds(*steps))
        .color_mode(common.BigValueColorMode.BACKGROUND)
        .graph_mode(common.BigValueGraphMode.NONE)
        .reduce_options(common_builders.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
    )
    return with_targets(panel, [Query(q.expr, q.legend, instant=True) for q in queries])


def bars(
    title: str,
    description: str,
    queries: list[Query],
    unit: str = "short",
    steps: tuple[tuple[float | None, str], ...] = ((None, "green"),),
) -> bargauge.Panel:
    panel = (
        bargauge.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .unit(unit)
        .min(0)
        .thresholds(thresholds(*steps))
        .orientation(common.VizOrientation.HORIZONTAL)
        .display_mode(common.BarGaugeDisplayMode.GRADIENT)
        .reduce_options(common_builders.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
    )
    return with_targets(panel, [Query(q.expr, q.legend, instant=True) for q in queries])


def grid_table(
    title: str,
    description: str,
    queries: list[Query],
    columns: dict[str, str],
    units: dict[str, str] | None = None,
    sort_by: str | None = None,
) -> table.Panel:
    """An instant table: one row per label set, one column per query (`Value #A` renamed by `columns`)."""
    rename = {f"Value #{REF_IDS[i]}": name for i, name in enumerate(columns.values())}
    panel = (
        table.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .with_transformation(model.DataTransformerConfig(id_val="merge", options={}))
        .with_transformation(
            model.DataTransformerConfig(
                id_val="organize", options={"excludeByName": {"Time": True}, "renameByName": rename}
            )
        )
    )
    for column, unit in (units or {}).items():
        panel = panel.override_by_name(column, [model.DynamicConfigValue(id_val="unit", value=unit)])
    if sort_by:
        panel = panel.sort_by([common_builders.TableSortByFieldState().display_name(sort_by).desc(False)])
    return with_targets(panel, queries, table_format=True)


def host_heatmap(title: str, description: str, query: Query) -> heatmap_builders.Panel:
    """One row per host, colour = share of its allocatable handed out (Grafana heatmap of time series)."""
    panel = (
        heatmap_builders.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .calculate(False)
        .unit("percentunit")
        .color(
            heatmap_builders.HeatmapColorOptions()
            .mode(heatmap_models.HeatmapColorMode.SCHEME)
            .scheme("RdYlGn")
            .reverse(True)
            .min(0)
            .max(1)
            .exponent(0.5)
            .steps(64)
            .scale(heatmap_models.HeatmapColorScale.LINEAR)
        )
        .y_axis(heatmap_builders.YAxisConfig().axis_placement(common.AxisPlacement.LEFT))
        .filter_values(heatmap_builders.FilterValueRange().le(-1))  # show 0 % hosts too (default hides them)
        .rows_frame(heatmap_builders.RowsHeatmapOptions().layout(common.HeatmapCellLayout.AUTO))
        .cell_gap(1)
        .show_value(common.VisibilityMode.NEVER)
    )
    return with_targets(panel, [query])


class Layout:
    """Flow layout on the 24-column grid: rows of panels, wrapping when a line is full."""

    def __init__(self, board: dashboard.Dashboard):
        self.board = board
        self.x = 0
        self.y = 0
        self.line_height = 0
        self.next_id = 1

    def _newline(self) -> None:
        if self.x:
            self.y += self.line_height
            self.x = 0
            self.line_height = 0

    def row(self, title: str) -> Layout:
        self._newline()
        self.board = self.board.with_row(
            dashboard.Row(title).id(self.next_id).grid_pos(model.GridPos(h=1, w=GRID_WIDTH, x=0, y=self.y))
        )
        self.next_id += 1
        self.y += 1
        return self

    def add(self, panel: Any, width: int, height: int = 8) -> Layout:
        if not 0 < width <= GRID_WIDTH:
            raise ValueError(f"panel width {width} outside the {GRID_WIDTH}-column grid")
        if self.x + width > GRID_WIDTH:
            self._newline()
        self.board = self.board.with_panel(
            panel.id(self.next_id).grid_pos(model.GridPos(h=height, w=width, x=self.x, y=self.y))
        )
        self.next_id += 1
        self.x += width
        self.line_height = max(self.line_height, height)
        if self.x == GRID_WIDTH:
            self._newline()
        return self


# -- variables ----------------------------------------------------------------------------------------


def datasource_variable() -> dashboard.DatasourceVariable:
    return dashboard.DatasourceVariable("datasource").label("Data source").type("prometheus").regex("")


def query_variable(
    name: str, label: str, query: str, *, multi: bool = True, description: str = ""
) -> dashboard.QueryVariable:
    variable = (
        dashboard.QueryVariable(name)
        .label(label)
        .datasource(DATASOURCE)
        .query(query)
        .refresh(model.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(model.VariableSort.ALPHABETICAL_ASC)
        .description(description or label)
    )
    if multi:
        variable = variable.multi(True).include_all(True).all_value(".*")
    return variable


def custom_variable(name: str, label: str, values: list[str]) -> dashboard.CustomVariable:
    return (
        dashboard.CustomVariable(name)
        .label(label)
        .values(",".join(values))
        .current(model.VariableOption(text=values[0], value=values[0], selected=True))
    )


def new_dashboard(uid: str, title: str, description: str, variables: list[Any]) -> dashboard.Dashboard:
    board = (
        dashboard.Dashboard(title)
        .uid(uid)
        .description(description)
        .tags(TAGS)
        .refresh("1m")
        .time("now-7d", "now")
        .timezone("browser")
        .tooltip(model.DashboardCursorSync.CROSSHAIR)
        .link(
            dashboard.DashboardLink("capacityd")
            .type(model.DashboardLinkType.DASHBOARDS)
            .tags(TAGS)
            .as_dropdown(True)
            .include_vars(False)
            .keep_time(True)
        )
        .with_variable(datasource_variable())
    )
    for variable in variables:
        board = board.with_variable(variable)
    return board


# -- the dashboards -----------------------------------------------------------------------------------

OPENSTACK_CLOUDS = 'label_values(capacity_resource_capacity{layer="openstack"}, cloud)'
K8S_CLUSTERS = 'label_values(capacity_resource_capacity{layer="kubernetes"}, cloud)'


def not_n_plus_one(where: str) -> str:
    """Pools (of any kind) where losing the worst failure domain leaves consumers without a home; 0, not
    absent, when there are none, so the stat shows a green 0 instead of "No data"."""
    shortfall = f"max by (cloud, pool_kind, pool) (capacity_headroom_failure_shortfall{{{where}}})"
    return f"count by (cloud) ({shortfall} > 0) or count by (cloud) ({shortfall}) * 0"


def overview() -> dashboard.Dashboard:
    board = new_dashboard(
        "capacityd-overview",
        "capacityd / Capacity overview",
        "Headroom in slots, N+1 and time to exhaustion for every OpenStack cloud and Kubernetes cluster.",
        [query_variable("cloud", "Cloud", OPENSTACK_CLOUDS), query_variable("cluster", "Cluster", K8S_CLUSTERS)],
    )
    layout = Layout(board)
    for layer, name, variable, whole, shapes in (
        ("openstack", "OpenStack clouds", "cloud", "cloud", "flavor"),
        ("kubernetes", "Kubernetes clusters", "cluster", "cluster", "pod shape"),
    ):
        where = f'layer="{layer}", cloud=~"${variable}"'
        layout.row(name)
        layout.add(
            single_stat(
                "Smallest headroom (slots)",
                f"The {shapes} with the fewest slots left in the whole {whole}: the first requests to fail.",
                [Query(f'min by (cloud) (capacity_headroom_slots{{{where}, pool_kind="{whole}"}})', "{{cloud}}")],
                steps=((None, "red"), (5, "orange"), (20, "green")),
            ),
            5,
            6,
        )
        layout.add(
            single_stat(
                "Pools not N+1",
                "Pools (zones, aggregates, node pools, the whole estate) where losing the worst failure domain "
                "would leave some of its consumers without a home.",
                [Query(not_n_plus_one(where), "{{cloud}}")],
                steps=((None, "green"), (1, "red")),
            ),
            5,
            6,
        )
        layout.add(
            single_stat(
                "Soonest exhaustion (median)",
                "Shortest median time until a pool's allocations or usage reach its allocatable.",
                [Query(f'min by (cloud) (capacity_exhaustion_seconds{{{where}, quantile="0.5"}})', "{{cloud}}")],
                unit="s",
                steps=((None, "red"), (30 * DAY, "orange"), (90 * DAY, "green")),
            ),
            5,
            6,
        )
        layout.add(
            graph(
                "Allocated share of allocatable",
                "Sum of allocations over sum of allocatable, per resource (1 = full).",
                [
                    Query(
                        f"sum by (cloud, resource) (capacity_resource_allocated{{{where}}})"
                        f" / sum by (cloud, resource) (capacity_resource_allocatable{{{where}}} > 0)",
                        "{{cloud}} {{resource}}",
                    )
                ],
                unit="percentunit",
                fill=0,
            ),
            9,
            6,
        )
        layout.add(
            bars(
                f"Headroom per {shapes}, whole {whole}",
                f"How many more of each {shapes} fit anywhere in the {whole} now.",
                [
                    Query(
                        f'max by (cloud, shape) (capacity_headroom_slots{{{where}, pool_kind="{whole}"}})',
                        "{{cloud}} {{shape}}",
                    )
                ],
                steps=((None, "red"), (5, "orange"), (20, "green")),
            ),
            8,
            10,
        )
        layout.add(
            grid_table(
                f"Headroom per pool and {shapes}",
                "Slots: how many more fit now. After failure: what is left once the worst failure domain is lost "
                "and its consumers are re-placed on the survivors.",
                [
                    Query(
                        f"max by (cloud, pool_kind, pool, shape) (capacity_headroom_slots{{{where}}})",
                        "{{cloud}} {{pool_kind}} {{pool}} {{shape}}",
                    ),
                    Query(
                        f"min by (cloud, pool_kind, pool, shape) (capacity_headroom_slots_after_failure{{{where}}})",
                        "{{cloud}} {{pool_kind}} {{pool}} {{shape}}",
                    ),
                ],
                {"A": "slots", "B": "after failure"},
                sort_by="slots",
            ),
            8,
            10,
        )
        layout.add(
            grid_table(
                "Time to exhaustion per pool",
                "Forecast time until each pool's allocatable is reached: p10 is the earliest plausible date, "
                "p90 the latest (80 % interval); +Inf means not within the forecast horizon.",
                [
                    Query(
                        "min by (cloud, pool, resource, basis) "
                        f'(capacity_exhaustion_seconds{{{where}, quantile="{q}"}})',
                        "{{cloud}} {{pool}} {{resource}} {{basis}}",
                    )
                    for q in ("0.1", "0.5", "0.9")
                ],
                {"A": "p10", "B": "median", "C": "p90"},
                units={"p10": "s", "median": "s", "p90": "s"},
                sort_by="median",
            ),
            8,
            10,
        )
    return layout.board


def openstack_pools() -> dashboard.Dashboard:
    scope = 'layer="openstack", cloud=~"$cloud", pool=~"$pool"'
    zones = f'{scope}, pool_kind="az"'
    aggregates = 'layer="openstack", cloud=~"$cloud", pool_kind=~"az|aggregate"'
    board = new_dashboard(
        "capacityd-openstack-pools",
        "capacityd / OpenStack pools",
        "Placement's view per availability zone and aggregate: allocation, headroom per flavor, N+1, "
        "per-host heat map.",
        [
            query_variable("cloud", "Cloud", OPENSTACK_CLOUDS),
            query_variable(
                "pool",
                "Pool (AZ)",
                'label_values(capacity_resource_capacity{layer="openstack", cloud=~"$cloud"}, pool)',
            ),
            query_variable(
                "shape",
                "Flavor",
                'label_values(capacity_headroom_host_slots{layer="openstack", cloud=~"$cloud", pool=~"$pool"}, shape)',
                multi=False,
            ),
        ],
    )
    layout = Layout(board)
    layout.row("Allocation")
    for title, resources, unit in (
        ("vCPU and PCPU", "vcpu|pcpu", "short"),
        ("Memory", "memory", "bytes"),
        ("Disk", "disk", "bytes"),
    ):
        selector = f'{scope}, resource=~"{resources}"'
        layout.add(
            graph(
                f"{title}: allocated vs allocatable",
                "Allocatable is (total - reserved) x allocation ratio, Placement's arithmetic; shared storage "
                "providers count in their pool.",
                [
                    Query(
                        f"sum by (pool, resource) (capacity_resource_allocated{{{selector}}})",
                        "{{pool}} {{resource}} allocated",
                    ),
                    Query(
                        f"sum by (pool, resource) (capacity_resource_allocatable{{{selector}}})",
                        "{{pool}} {{resource}} allocatable",
                    ),
                ],
                unit=unit,
                fill=0,
                calcs=["lastNotNull", "max"],
            ),
            8,
        )
    layout.row("Headroom")
    layout.add(
        bars(
            "Headroom per flavor (slots)",
            "How many more VMs of each flavor fit in each availability zone now.",
            [Query(f"max by (pool, shape) (capacity_headroom_slots{{{zones}}})", "{{pool}} {{shape}}")],
            steps=((None, "red"), (5, "orange"), (20, "green")),
        ),
        12,
        10,
    )
    layout.add(
        bars(
            "N+1: slots after the worst failure",
            "Slots left once the failure domain that hurts each flavor most is lost and its VMs are re-placed.",
            [
                Query(
                    f"min by (pool, shape, failure_domain) (capacity_headroom_slots_after_failure{{{zones}}})",
                    "{{pool}} {{shape}} without {{failure_domain}}",
                )
            ],
            steps=((None, "red"), (1, "orange"), (5, "green")),
        ),
        12,
        10,
    )
    layout.add(
        grid_table(
            "Headroom by AZ and aggregate",
            "Every availability zone and host aggregate of the cloud: slots now, slots after the worst failure, "
            "and how many consumers of that failure domain would find no home (shortfall).",
            [
                Query(
                    f"max by (pool_kind, pool, shape) (capacity_headroom_slots{{{aggregates}}})",
                    "{{pool_kind}} {{pool}} {{shape}}",
                ),
                Query(
                    f"min by (pool_kind, pool, shape) (capacity_headroom_slots_after_failure{{{aggregates}}})",
                    "{{pool_kind}} {{pool}} {{shape}}",
                ),
                Query(
                    f"max by (pool_kind, pool, shape) (capacity_headroom_failure_shortfall{{{aggregates}}})",
                    "{{pool_kind}} {{pool}} {{shape}}",
                ),
            ],
            {"A": "slots", "B": "after failure", "C": "shortfall"},
            sort_by="slots",
        ),
        12,
        10,
    )
    layout.add(
        graph(
            "Headroom over time",
            "Slots per flavor and availability zone: how fast the room is going.",
            [Query(f"max by (pool, shape) (capacity_headroom_slots{{{zones}}})", "{{pool}} {{shape}}")],
            fill=0,
        ),
        12,
        10,
    )
    layout.row("Hosts")
    for resource, label in (("vcpu", "vCPU"), ("memory", "memory")):
        selector = f'{scope}, resource="{resource}"'
        layout.add(
            host_heatmap(
                f"Per-host {label} allocation (share of allocatable)",
                "One row per compute host; red hosts are full, green ones have room. Fragmentation shows as "
                "many orange rows with no green one.",
                Query(
                    f"sum by (host) (capacity_resource_allocated{{{selector}}})"
                    f" / sum by (host) (capacity_resource_allocatable{{{selector}}} > 0)",
                    "{{host}}",
                ),
            ),
            12,
            10,
        )
    layout.add(
        bars(
            "Slots per host for $shape",
            "How many more VMs of the chosen flavor fit on each host (disabled hosts and hosts outside the "
            "flavor's aggregates are absent): fragmentation at a glance.",
            [Query(f'sum by (host) (capacity_headroom_host_slots{{{scope}, shape="$shape"}})', "{{host}}")],
            steps=((None, "red"), (1, "orange"), (4, "green")),
        ),
        24,
        10,
    )
    layout.add(
        graph(
            "Servers by state",
            "Nova servers per pool and state (shut-off servers still hold their allocation).",
            [Query(f"sum by (pool, state) (capacity_consumers{{{scope}}})", "{{pool}} {{state}}")],
            stack=True,
        ),
        12,
        8,
    )
    layout.add(
        graph(
            "Reclaimable",
            "Capacity held by idle VMs (CPU near zero over the window) that could be won back.",
            [Query(f"sum by (pool, resource) (capacity_reclaimable{{{scope}}})", "{{pool}} {{resource}}")],
            fill=0,
        ),
        12,
        8,
    )
    return layout.board


def kubernetes_clusters() -> dashboard.Dashboard:
    scope = 'layer="kubernetes", cloud=~"$cluster", pool=~"$pool"'
    node_pools = f'{scope}, pool_kind="node_pool"'
    board = new_dashboard(
        "capacityd-kubernetes",
        "capacityd / Kubernetes clusters",
        "Per node pool: requests and usage against allocatable, pod headroom per shape, N+1, per-node heat map.",
        [
            query_variable("cluster", "Cluster", K8S_CLUSTERS),
            query_variable(
                "pool",
                "Node pool",
                'label_values(capacity_resource_capacity{layer="kubernetes", cloud=~"$cluster"}, pool)',
            ),
        ],
    )
    layout = Layout(board)
    layout.row("Requests and usage")
    for title, resource, unit in (("CPU", "cpu", "short"), ("Memory", "memory", "bytes")):
        selector = f'{scope}, resource="{resource}"'
        layout.add(
            graph(
                f"{title}: requests, usage and allocatable",
                "Requests are effective pod requests (max of init containers, plus overhead); usage is measured "
                "by the kubelet where available.",
                [
                    Query(f"sum by (pool) (capacity_resource_allocated{{{selector}}})", "{{pool}} requested"),
                    Query(f"sum by (pool) (capacity_resource_used{{{selector}}})", "{{pool}} used"),
                    Query(f"sum by (pool) (capacity_resource_allocatable{{{selector}}})", "{{pool}} allocatable"),
                ],
                unit=unit,
                fill=0,
                calcs=["lastNotNull", "max"],
            ),
            8,
        )
    selector = f'{scope}, resource="pods"'
    layout.add(
        graph(
            "Pods: scheduled and allowed",
            "Pods holding a slot on the nodes against the kubelet's max-pods (allocatable pods).",
            [
                Query(f"sum by (pool) (capacity_resource_allocated{{{selector}}})", "{{pool}} scheduled"),
                Query(f"sum by (pool) (capacity_resource_allocatable{{{selector}}})", "{{pool}} allocatable"),
            ],
            fill=0,
            calcs=["lastNotNull", "max"],
        ),
        8,
    )
    layout.row("Headroom")
    layout.add(
        bars(
            "Pod headroom per shape and node pool",
            "How many more pods of each shape fit in each node pool now.",
            [Query(f"max by (pool, shape) (capacity_headroom_slots{{{node_pools}}})", "{{pool}} {{shape}}")],
            steps=((None, "red"), (5, "orange"), (20, "green")),
        ),
        8,
        10,
    )
    layout.add(
        bars(
            "Pod headroom per shape, whole cluster",
            "How many more pods of each shape fit anywhere in the cluster.",
            [
                Query(
                    'max by (cloud, shape) (capacity_headroom_slots{layer="kubernetes", cloud=~"$cluster", '
                    'pool_kind="cluster"})',
                    "{{cloud}} {{shape}}",
                )
            ],
            steps=((None, "red"), (5, "orange"), (20, "green")),
        ),
        8,
        10,
    )
    layout.add(
        bars(
            "N+1: pod slots after the worst node failure",
            "Slots left once the node that hurts each shape most is lost and its pods are rescheduled.",
            [
                Query(
                    f"min by (pool, shape, failure_domain) (capacity_headroom_slots_after_failure{{{node_pools}}})",
                    "{{pool}} {{shape}} without {{failure_domain}}",
                )
            ],
            steps=((None, "red"), (1, "orange"), (5, "green")),
        ),
        8,
        10,
    )
    layout.row("Nodes")
    selector = f'{scope}, resource="cpu"'
    layout.add(
        host_heatmap(
            "Per-node CPU requests (share of allocatable)",
            "One row per node: red nodes cannot take another pod with a CPU request.",
            Query(
                f"sum by (host) (capacity_resource_allocated{{{selector}}})"
                f" / sum by (host) (capacity_resource_allocatable{{{selector}}} > 0)",
                "{{host}}",
            ),
        ),
        12,
        10,
    )
    layout.add(
        graph(
            "Pods by phase",
            'Pods per node pool and phase (Pending pods without a node have host="").',
            [Query(f"sum by (pool, state) (capacity_consumers{{{scope}}})", "{{pool}} {{state}}")],
            stack=True,
        ),
        12,
        10,
    )
    layout.add(
        graph(
            "Reclaimable requests",
            "Requests above what pods use (CPU p95, memory max x 1.15), per node pool.",
            [Query(f"sum by (pool, resource) (capacity_reclaimable{{{scope}}})", "{{pool}} {{resource}}")],
            fill=0,
        ),
        24,
        8,
    )
    return layout.board


def hypervisor_detail() -> dashboard.Dashboard:
    host_scope = 'cloud=~"$cloud", host="$host"'
    board = new_dashboard(
        "capacityd-hypervisor",
        "capacityd / Hypervisor detail",
        "One hypervisor seen from libvirt (what it has and runs) and from Placement (what is allocated on it).",
        [
            query_variable("cloud", "Cloud", 'label_values(capacity_resource_capacity{layer="hypervisor"}, cloud)'),
            query_variable(
                "pool", "Pool", 'label_values(capacity_resource_capacity{layer="hypervisor", cloud=~"$cloud"}, pool)'
            ),
            query_variable(
                "host",
                "Host",
                'label_values(capacity_resource_capacity{layer="hypervisor", cloud=~"$cloud", pool=~"$pool"}, host)',
                multi=False,
            ),
        ],
    )
    layout = Layout(board)
    layout.row("libvirt")
    hv = f'layer="hypervisor", {host_scope}'
    layout.add(
        single_stat(
            "Logical CPUs",
            "CPUs the hypervisor reports.",
            [Query(f'sum by (host) (capacity_resource_capacity{{{hv}, resource="cpu"}})', "{{host}}")],
        ),
        6,
        4,
    )
    layout.add(
        single_stat(
            "Memory",
            "Physical memory the hypervisor reports.",
            [Query(f'sum by (host) (capacity_resource_capacity{{{hv}, resource="memory"}})', "{{host}}")],
            unit="bytes",
        ),
        6,
        4,
    )
    layout.add(
        single_stat(
            "Running domains",
            "libvirt domains in the running state.",
            [Query(f'sum by (host) (capacity_consumers{{{hv}, state="running"}})', "{{host}}")],
        ),
        6,
        4,
    )
    layout.add(
        single_stat(
            "vCPU overcommit",
            "vCPUs given to domains per logical CPU.",
            [
                Query(
                    f'sum by (host) (capacity_resource_allocated{{{hv}, resource="cpu"}})'
                    f' / sum by (host) (capacity_resource_capacity{{{hv}, resource="cpu"}} > 0)',
                    "{{host}}",
                )
            ],
            unit="none",
            steps=((None, "green"), (4, "orange"), (8, "red")),
        ),
        6,
        4,
    )
    for title, resource, unit in (("CPU", "cpu", "short"), ("Memory", "memory", "bytes")):
        selector = f'{hv}, resource="{resource}"'
        layout.add(
            graph(
                f"{title}: capacity, allocated to domains, used",
                "Allocated: the sum of the domains' vCPUs / memory. Used: measured (absent for guests without "
                "balloon statistics, never a made-up zero).",
                [
                    Query(f"sum by (host) (capacity_resource_capacity{{{selector}}})", "{{host}} capacity"),
                    Query(f"sum by (host) (capacity_resource_allocated{{{selector}}})", "{{host}} allocated"),
                    Query(f"sum by (host) (capacity_resource_used{{{selector}}})", "{{host}} used"),
                ],
                unit=unit,
                fill=0,
            ),
            12,
            8,
        )
    layout.add(
        graph(
            "Domains by state",
            "libvirt domains on the host by state.",
            [Query(f"sum by (host, state) (capacity_consumers{{{hv}}})", "{{host}} {{state}}")],
            stack=True,
        ),
        24,
        6,
    )
    layout.row("Placement")
    os_scope = f'layer="openstack", {host_scope}'
    layout.add(
        grid_table(
            "Placement inventory of this host",
            "The same host as a resource provider: allocatable is what Nova may hand out after reserved and "
            "allocation ratio; compare with libvirt above to spot drift.",
            [
                Query(f"sum by (host, resource) (capacity_resource_capacity{{{os_scope}}})", "{{host}} {{resource}}"),
                Query(
                    f"sum by (host, resource) (capacity_resource_allocatable{{{os_scope}}})", "{{host}} {{resource}}"
                ),
                Query(f"sum by (host, resource) (capacity_resource_allocated{{{os_scope}}})", "{{host}} {{resource}}"),
            ],
            {"A": "capacity", "B": "allocatable", "C": "allocated"},
        ),
        12,
        8,
    )
    layout.add(
        graph(
            "Placement allocation share",
            "Allocated over allocatable per resource class on this host.",
            [
                Query(
                    f"sum by (host, resource) (capacity_resource_allocated{{{os_scope}}})"
                    f" / sum by (host, resource) (capacity_resource_allocatable{{{os_scope}}} > 0)",
                    "{{host}} {{resource}}",
                )
            ],
            unit="percentunit",
            fill=0,
        ),
        12,
        8,
    )
    return layout.board


def forecasts() -> dashboard.Dashboard:
    series = 'layer="$layer", cloud="$cloud", pool="$pool", resource="$resource", basis="$basis"'
    pool = 'layer="$layer", cloud="$cloud", pool="$pool", resource="$resource"'
    board = new_dashboard(
        "capacityd-forecasts",
        "capacityd / Forecasts",
        "Time until each pool runs out, with the 80 % interval of the forecast, and the demand behind it.",
        [
            query_variable("layer", "Layer", "label_values(capacity_exhaustion_seconds, layer)", multi=False),
            query_variable(
                "cloud",
                "Cloud or cluster",
                'label_values(capacity_exhaustion_seconds{layer="$layer"}, cloud)',
                multi=False,
            ),
            query_variable(
                "pool",
                "Pool",
                'label_values(capacity_exhaustion_seconds{layer="$layer", cloud="$cloud"}, pool)',
                multi=False,
            ),
            query_variable(
                "resource",
                "Resource",
                'label_values(capacity_exhaustion_seconds{layer="$layer", cloud="$cloud", pool="$pool"}, resource)',
                multi=False,
            ),
            custom_variable("basis", "Basis", ["allocated", "used"]),
        ],
    )
    layout = Layout(board)
    layout.row("Selected pool")
    band = (
        graph(
            "Time to exhaustion with 80 % interval",
            "p10 is the earliest plausible exhaustion (demand at the upper band), p90 the latest; the shaded "
            "band between them is the forecast's 80 % interval. A narrowing band means growing confidence.",
            [
                Query(f'capacity_exhaustion_seconds{{{series}, quantile="{q}"}} / {DAY}', name)
                for q, name in (("0.1", "p10"), ("0.5", "median"), ("0.9", "p90"))
            ],
            unit="d",
            fill=0,
        )
        .override_by_name(
            "p90",
            [
                model.DynamicConfigValue(id_val="custom.fillBelowTo", value="p10"),
                model.DynamicConfigValue(id_val="custom.fillOpacity", value=20),
            ],
        )
        .override_by_name(
            "p10", [model.DynamicConfigValue(id_val="custom.lineStyle", value={"fill": "dash", "dash": [10, 10]})]
        )
    )
    layout.add(band, 12, 10)
    layout.add(
        graph(
            "Demand and limit",
            "The pool's total (allocations or measured usage, per the basis variable) against its allocatable: "
            "the series the forecast extrapolates.",
            [
                Query(
                    f"sum by (pool, resource) (capacity_resource_${{basis}}{{{pool}}})", "{{pool}} {{resource}} $basis"
                ),
                Query(
                    f"sum by (pool, resource) (capacity_resource_allocatable{{{pool}}})",
                    "{{pool}} {{resource}} allocatable",
                ),
            ],
            fill=0,
        ),
        12,
        10,
    )
    layout.add(
        single_stat(
            "Median exhaustion in",
            "Median forecast time until allocatable is reached.",
            [Query(f'capacity_exhaustion_seconds{{{series}, quantile="0.5"}}', "{{pool}} {{resource}}")],
            unit="s",
            steps=((None, "red"), (30 * DAY, "orange"), (90 * DAY, "green")),
        ),
        8,
        5,
    )
    layout.add(
        single_stat(
            "Earliest plausible (p10)",
            "Exhaustion if demand follows the upper band.",
            [Query(f'capacity_exhaustion_seconds{{{series}, quantile="0.1"}}', "{{pool}} {{resource}}")],
            unit="s",
            steps=((None, "red"), (30 * DAY, "orange"), (90 * DAY, "green")),
        ),
        8,
        5,
    )
    layout.add(
        single_stat(
            "Share of allocatable taken",
            "The pool's current total (per the basis) over its allocatable.",
            [
                Query(
                    f"sum by (pool, resource) (capacity_resource_${{basis}}{{{pool}}})"
                    f" / sum by (pool, resource) (capacity_resource_allocatable{{{pool}}} > 0)",
                    "{{pool}} {{resource}}",
                )
            ],
            unit="percentunit",
            steps=((None, "green"), (0.8, "orange"), (0.95, "red")),
        ),
        8,
        5,
    )
    layout.row("All pools")
    layout.add(
        grid_table(
            "Exhaustion per pool and resource",
            "Every forecast series: p10 / median / p90 time to exhaustion (+Inf: not within the horizon).",
            [
                Query(
                    f'min by (layer, cloud, pool, resource, basis) (capacity_exhaustion_seconds{{quantile="{q}"}})',
                    "{{cloud}} {{pool}} {{resource}} {{basis}}",
                )
                for q in ("0.1", "0.5", "0.9")
            ],
            {"A": "p10", "B": "median", "C": "p90"},
            units={"p10": "s", "median": "s", "p90": "s"},
            sort_by="median",
        ),
        16,
        10,
    )
    layout.add(
        bars(
            "Soonest ten (median)",
            "The ten series that run out first.",
            [
                Query(
                    'bottomk(10, min by (cloud, pool, resource, basis) (capacity_exhaustion_seconds{quantile="0.5"}))',
                    "{{cloud}}/{{pool}} {{resource}} ({{basis}})",
                )
            ],
            unit="s",
            steps=((None, "red"), (30 * DAY, "orange"), (90 * DAY, "green")),
        ),
        8,
        10,
    )
    return layout.board


def collector_health() -> dashboard.Dashboard:
    src = 'source=~"$source"'
    board = new_dashboard(
        "capacityd-health",
        "capacityd / Collector health",
        "Is capacityd seeing the estate: sources up, fresh, fast; errors by reason; reports sent.",
        [query_variable("source", "Source", "label_values(capacityd_source_up, source)")],
    )
    layout = Layout(board)
    layout.row("Sources")
    layout.add(
        single_stat(
            "Sources up",
            "Sources whose last poll succeeded.",
            [Query(f"sum by (kind) (capacityd_source_up{{{src}}})", "{{kind}}")],
        ),
        6,
        4,
    )
    layout.add(
        single_stat(
            "Sources stale",
            "Sources served from old data after failed polls.",
            [Query(f"sum by (kind) (capacityd_source_stale{{{src}}})", "{{kind}}")],
            steps=((None, "green"), (1, "red")),
        ),
        6,
        4,
    )
    layout.add(
        single_stat(
            "Exposition age",
            "Seconds since /metrics was last rendered (after a poll).",
            [Query("max by (instance) (time() - capacityd_snapshot_timestamp_seconds)", "{{instance}}")],
            unit="s",
            steps=((None, "green"), (300, "orange"), (900, "red")),
        ),
        6,
        4,
    )
    layout.add(
        single_stat("Version", "capacityd build.", [Query("count by (version) (capacityd_build_info)", "{{version}}")]),
        6,
        4,
    )
    layout.add(
        graph(
            "Up",
            "1 when the last poll of the source succeeded.",
            [Query(f"capacityd_source_up{{{src}}}", "{{source}} ({{kind}})")],
            minimum=0,
            maximum=1,
            fill=0,
        ),
        12,
        8,
    )
    layout.add(
        graph(
            "Data age",
            "Seconds since the last successful poll of each source.",
            [Query(f"time() - capacityd_source_last_success_timestamp_seconds{{{src}}}", "{{source}} ({{kind}})")],
            unit="s",
            fill=0,
        ),
        12,
        8,
    )
    layout.add(
        graph(
            "Poll duration",
            "Duration of the last poll; compare with the source's timeout.",
            [Query(f"capacityd_source_poll_duration_seconds{{{src}}}", "{{source}} ({{kind}})")],
            unit="s",
            fill=0,
        ),
        12,
        8,
    )
    layout.add(
        graph(
            "API calls per poll",
            "Remote calls the last successful poll made (libvirt calls, HTTP requests).",
            [Query(f"capacityd_source_api_calls{{{src}}}", "{{source}} ({{kind}})")],
            fill=0,
        ),
        12,
        8,
    )
    layout.row("Failures")
    zero_line = f'label_replace(sum by (source) (capacityd_source_polls_total{{{src}}}) * 0, "reason", "none", "", "")'
    layout.add(
        graph(
            "Poll errors by reason",
            'Failed polls per reason (unreachable, timeout, auth, api_error, malformed, ...); reason="none" '
            "is the zero line of a source that never failed.",
            [
                Query(
                    f"sum by (source, reason) (increase(capacityd_source_errors_total{{{src}}}[$__rate_interval]))"
                    f" or {zero_line}",
                    "{{source}} {{reason}}",
                )
            ],
            stack=True,
        ),
        12,
        8,
    )
    layout.add(
        graph(
            "Items skipped by reason",
            'Domains, providers or nodes left out of otherwise good polls; reason="none" is the zero line.',
            [
                Query(
                    "sum by (source, reason) "
                    f"(increase(capacityd_source_items_skipped_total{{{src}}}[$__rate_interval]))"
                    f" or {zero_line}",
                    "{{source}} {{reason}}",
                )
            ],
            stack=True,
        ),
        12,
        8,
    )
    layout.add(
        graph(
            "Polls per minute",
            "Poll attempts per minute and source.",
            [
                Query(
                    f"sum by (source) (rate(capacityd_source_polls_total{{{src}}}[$__rate_interval])) * 60",
                    "{{source}}",
                )
            ],
            fill=0,
        ),
        24,
        6,
    )
    layout.row("Reports")
    layout.add(
        graph(
            "Time since the last report was sent",
            "Per report; the CapacitydReportNotSent alert fires after 8 days.",
            [Query("time() - capacityd_report_last_success_timestamp_seconds", "{{report}}")],
            unit="s",
            fill=0,
        ),
        12,
        6,
    )
    layout.add(
        graph(
            "Report send failures",
            "Failed sends per report (capacityd retries with backoff).",
            [
                Query(
                    "sum by (report) (increase(capacityd_report_failures_total[$__rate_interval]))"
                    " or sum by (report) (capacityd_report_last_success_timestamp_seconds) * 0",
                    "{{report}}",
                )
            ],
            fill=0,
        ),
        12,
        6,
    )
    return layout.board


DASHBOARDS: dict[str, Callable[[], dashboard.Dashboard]] = {
    "capacity-overview": overview,
    "openstack-pools": openstack_pools,
    "kubernetes-clusters": kubernetes_clusters,
    "hypervisor-detail": hypervisor_detail,
    "forecasts": forecasts,
    "collector-health": collector_health,
}


def render_all() -> dict[str, str]:
    """File name -> JSON text of every dashboard (stable: sorted keys, two-space indent, final newline)."""
    rendered = {}
    for name, build in DASHBOARDS.items():
        model_ = build().build()
        rendered[f"{name}.json"] = json.dumps(model_, cls=JSONEncoder, indent=2, sort_keys=True) + "\n"
    return rendered


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if a committed file differs")
    parser.add_argument("--output", type=Path, default=OUTPUT_DIR, help="directory (default: %(default)s)")
    args = parser.parse_args(argv)
    stale = []
    for name, text in render_all().items():
        path = args.output / name
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(name)
            continue
        path.write_text(text)
        print(f"wrote {path}")
    if stale:
        print(f"out of date (run dashboards/generate.py): {', '.join(stale)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The frames the report analysis produces (docs/report.md, docs/schema.md).

Every number the weekly report shows is a column here, computed by collector.analyses.report; the
report exporter only selects rows (scope, top N), formats and charts them. The frames are registered
like any derived frame, so /metrics could expose them as well.
"""

from __future__ import annotations

from collector.contract.schema import FLOAT, STRING, TIMESTAMP, Column, FrameSchema, register

C = Column

LAYERS = ("hypervisor", "openstack", "kubernetes")
STATUSES = ("red", "amber", "green", "unknown")
RULES = ("full", "runs_out", "may_run_out", "no_runout", "utilization", "n1_fails", "no_usage", "no_data")
N1 = ("ok", "fails", "unknown")
METHODS = ("report", "backtest")

_POOL = (
    C("layer", STRING, "Layer the pool belongs to.", choices=LAYERS),
    C("cloud", STRING, "Cloud or Kubernetes cluster."),
    C("pool", STRING, "Pool (AZ, node pool, configured pool)."),
)

REPORT_POOLS = register(
    FrameSchema(
        name="report_pools",
        doc="Each pool's urgency band for one report (its thresholds): colour, the rule that set it, the "
        "series that runs out first, time remaining, utilization and its change over a week, N+1.",
        key=("report", "layer", "cloud", "pool"),
        columns=(
            C("report", STRING, "Report whose thresholds made the band ('' = the defaults)."),
            *_POOL,
            C("status", STRING, "Urgency band.", choices=STATUSES),
            C("rule", STRING, "Which rule set the band (the report words it).", choices=RULES),
            C("resource", STRING, "Series that runs out first (or the fullest one without a forecast).", nullable=True),
            C("basis", STRING, "allocated or used.", nullable=True),
            C(
                "days_p10",
                FLOAT,
                "Days to the earliest plausible exhaustion; +Inf beyond the horizon.",
                nullable=True,
                allow_inf=True,
            ),
            C(
                "days_p50",
                FLOAT,
                "Days to the median exhaustion; +Inf beyond the horizon.",
                nullable=True,
                allow_inf=True,
            ),
            C(
                "days_p90",
                FLOAT,
                "Days to the latest plausible exhaustion; +Inf beyond the horizon.",
                nullable=True,
                allow_inf=True,
            ),
            C("utilization", FLOAT, "Share of allocatable of that series (0-1+).", nullable=True),
            C("utilization_change", FLOAT, "Change of that share since a week ago (history).", nullable=True),
            C("hosts", FLOAT, "Hosts of the pool.", nullable=True),
            C("headroom_shape", STRING, "The pool's most used flavor/shape that has a headroom row.", nullable=True),
            C("headroom_slots", FLOAT, "Slots of that shape now.", nullable=True),
            C("n1", STRING, "N+1: survives losing its worst failure domain?", choices=N1),
            C("n1_domain", STRING, "The failure domain N+1 was judged against.", nullable=True),
            C("n1_shortfall", FLOAT, "Consumers left without a home after that failure.", nullable=True),
            C("n1_slots", FLOAT, "Slots of headroom_shape left after that failure.", nullable=True),
            C("red_days", FLOAT, "Threshold used: red when the median runs out within this many days."),
            C("amber_days", FLOAT, "Threshold used: amber when a band runs out within this many days."),
        ),
    )
)

REPORT_POOL_RESOURCES = register(
    FrameSchema(
        name="report_pool_resources",
        doc="Per pool and resource: sums over its hosts (capacity, allocatable, allocated, used), host count "
        "and reclaimable amount; unknown stays unknown (NaN, not 0).",
        key=("layer", "cloud", "pool", "resource"),
        columns=(
            *_POOL,
            C("resource", STRING, "Resource name (base units)."),
            C("hosts", FLOAT, "Hosts of the pool reporting this resource."),
            C("capacity", FLOAT, "Sum of capacity.", nullable=True),
            C("allocatable", FLOAT, "Sum of allocatable.", nullable=True),
            C("allocated", FLOAT, "Sum of allocated.", nullable=True),
            C("used", FLOAT, "Sum of used.", nullable=True),
            C("reclaimable", FLOAT, "Reclaimable amount (idle VMs, over-requesting pods).", nullable=True),
        ),
    )
)

REPORT_HEADROOM = register(
    FrameSchema(
        name="report_headroom",
        doc="Headroom slots per pool and shape now and expected at +30/+60/+90 days (today's slots scaled by "
        "the share of the limiting resource's free amount the median forecast leaves then).",
        key=("layer", "cloud", "pool_kind", "pool", "shape_kind", "shape"),
        columns=(
            C("layer", STRING, "Layer.", choices=LAYERS),
            C("cloud", STRING, "Cloud or cluster."),
            C("pool_kind", STRING, "az, node_pool, cloud, cluster, aggregate."),
            C("pool", STRING, "Pool."),
            C("shape_kind", STRING, "flavor or pod shape kind."),
            C("shape", STRING, "Flavor or pod shape."),
            C("slots", FLOAT, "Slots now.", nullable=True),
            C("slots_30d", FLOAT, "Slots expected in 30 days (NaN without a forecast).", nullable=True),
            C("slots_60d", FLOAT, "Slots expected in 60 days.", nullable=True),
            C("slots_90d", FLOAT, "Slots expected in 90 days.", nullable=True),
            C("slots_after_failure", FLOAT, "Slots after the worst failure.", nullable=True),
            C("failure_domain", STRING, "That failure domain.", nullable=True),
            C("shortfall", FLOAT, "Consumers left homeless by it.", nullable=True),
            C("limiting_resource", STRING, "Resource that limits the slots.", nullable=True),
            C("hosts", FLOAT, "Hosts.", nullable=True),
        ),
    )
)

REPORT_GROWTH = register(
    FrameSchema(
        name="report_growth",
        doc="Growth of each project/namespace over the report's week: consumers (VMs, pods) counted at each "
        "source's own samples nearest to the two ends of the window; only sources with samples at both "
        "ends count, so existing consumers are never counted as growth.",
        key=("layer", "cloud", "project"),
        columns=(
            C("layer", STRING, "Layer.", choices=LAYERS),
            C("cloud", STRING, "Cloud or cluster."),
            C("project", STRING, "Project (OpenStack/hypervisor) or namespace (Kubernetes)."),
            C("count_start", FLOAT, "Consumers at the start of the window.", non_negative=True),
            C("count_now", FLOAT, "Consumers at the end of the window.", non_negative=True),
            C("delta_count", FLOAT, "count_now - count_start."),
            C("delta_cpu", FLOAT, "Change in cores (today's mean size of each flavor/shape)."),
            C("delta_memory", FLOAT, "Change in bytes (likewise)."),
            C("start", TIMESTAMP, "Earliest start sample the change is measured from."),
            C("end", TIMESTAMP, "Latest end sample."),
        ),
    )
)

REPORT_ACCURACY = register(
    FrameSchema(
        name="report_accuracy",
        doc="How forecasts made about a month ago fared: per checked series, the band predicted for today "
        "and today's actual (daily maximum). `report` rows compare bands stored with a sent report.",
        key=("layer", "cloud", "pool", "resource", "basis", "method"),
        columns=(
            *_POOL,
            C("resource", STRING, "Resource."),
            C("basis", STRING, "allocated or used."),
            C("method", STRING, "backtest (re-forecast from history) or report (stored with a send).", choices=METHODS),
            C("made_at", TIMESTAMP, "When the forecast was made (its origin)."),
            C("target_time", TIMESTAMP, "The forecast day compared."),
            C("predicted_p10", FLOAT, "Lower band then."),
            C("predicted_p50", FLOAT, "Median then."),
            C("predicted_p90", FLOAT, "Upper band then."),
            C("actual", FLOAT, "Today's daily maximum."),
            C("limit", FLOAT, "The series' limit (allocatable).", nullable=True),
            C("error", FLOAT, "(p50 - actual) / limit.", nullable=True),
            C("inside", FLOAT, "1 when the actual is inside the p10-p90 band, else 0."),
        ),
    )
)

REPORT_ACCURACY_SERIES = register(
    FrameSchema(
        name="report_accuracy_series",
        doc="The series each report checks for accuracy (its most urgent, in its scope) with today's actual.",
        key=("report", "layer", "cloud", "pool", "resource", "basis"),
        columns=(
            C("report", STRING, "Report ('' = the defaults)."),
            *_POOL,
            C("resource", STRING, "Resource."),
            C("basis", STRING, "allocated or used."),
            C("rank", FLOAT, "Order in the report (most urgent first)."),
            C("actual", FLOAT, "Today's daily maximum (NaN when unknown).", nullable=True),
            C("limit", FLOAT, "The series' limit.", nullable=True),
        ),
    )
)

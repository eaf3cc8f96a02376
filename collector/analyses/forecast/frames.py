"""The frames the forecast analysis produces (documented in docs/schema.md and docs/forecasting.md).

`forecast` has one row per pool, resource and basis (allocated or used): when the pool runs out,
as an 80 % interval. `forecast_points` carries the future bands for charts (daily maxima of the
hourly bands, since a pool runs out at its daily peak).
"""

from __future__ import annotations

from collector.contract.schema import FLOAT, INT, STRING, TIMESTAMP, Column, FrameSchema, register

BASES = ("allocated", "used")
LAYERS = ("hypervisor", "openstack", "kubernetes")

C = Column

_SERIES_KEY = (
    C("layer", STRING, "Layer the pool belongs to.", choices=LAYERS),
    C("cloud", STRING, "Cloud or Kubernetes cluster."),
    C("pool", STRING, "Pool (AZ, node pool, configured pool)."),
    C("resource", STRING, "Resource name (capacity-frame names, base units)."),
    C("basis", STRING, "What is forecast: the pool's sum of allocations, or of measured usage.", choices=BASES),
)

FORECAST = register(
    FrameSchema(
        name="forecast",
        doc="Time until a pool's allocatable is reached, per pool, resource and basis, with an 80 % interval.",
        key=("layer", "cloud", "pool", "resource", "basis"),
        columns=(
            C("timestamp", TIMESTAMP, "When the forecast was computed (UTC)."),
            *_SERIES_KEY,
            C("current", FLOAT, "Last observed value of the series (base units).", nullable=True),
            C("limit", FLOAT, "Exhaustion threshold: the pool's last known allocatable.", nullable=True),
            C(
                "exhaustion_p10",
                TIMESTAMP,
                "Earliest plausible exhaustion: 10th percentile of the first crossing over sampled demand paths; "
                "NaT when not within the horizon.",
                nullable=True,
            ),
            C(
                "exhaustion_p50",
                TIMESTAMP,
                "Median exhaustion: 50th percentile of the first crossing over sampled demand paths; "
                "NaT when not within the horizon.",
                nullable=True,
            ),
            C(
                "exhaustion_p90",
                TIMESTAMP,
                "Latest plausible exhaustion: 90th percentile of the first crossing over sampled demand paths; "
                "NaT when not within the horizon.",
                nullable=True,
            ),
            C(
                "seconds_p10",
                FLOAT,
                "Seconds from now to exhaustion_p10; +Inf when not within the horizon.",
                non_negative=True,
                allow_inf=True,
            ),
            C(
                "seconds_p50",
                FLOAT,
                "Seconds from now to exhaustion_p50; +Inf when not within the horizon.",
                non_negative=True,
                allow_inf=True,
            ),
            C(
                "seconds_p90",
                FLOAT,
                "Seconds from now to exhaustion_p90; +Inf when not within the horizon.",
                non_negative=True,
                allow_inf=True,
            ),
            C(
                "growth_per_day",
                FLOAT,
                "Slope of the median forecast over the horizon (base units per day).",
                nullable=True,
            ),
            C("model", STRING, "Model chosen for this series by the rolling-origin backtest."),
            C(
                "mase",
                FLOAT,
                "Backtest MASE of the chosen model (scale: in-sample daily seasonal naive).",
                nullable=True,
                non_negative=True,
            ),
            C("history_points", INT, "Hourly points of history the forecast was fitted on."),
            C(
                "exhaustion_reason",
                STRING,
                "Why exhaustion_p50 is or is not a date: exhausted, within_horizon, "
                "beyond_horizon (growing, but fewer than half the sampled paths reach the limit within the horizon), "
                "not_growing "
                "(the median forecast is flat or falling), no_limit (allocatable unknown), insufficient_history.",
                nullable=True,
                choices=(
                    "exhausted",
                    "within_horizon",
                    "beyond_horizon",
                    "not_growing",
                    "no_limit",
                    "insufficient_history",
                ),
            ),
        ),
    )
)

FORECAST_POINTS = register(
    FrameSchema(
        name="forecast_points",
        doc="Future bands of each forecast series, one row per day (daily maxima of the hourly bands).",
        key=("layer", "cloud", "pool", "resource", "basis", "timestamp"),
        columns=(
            *_SERIES_KEY,
            C("timestamp", TIMESTAMP, "Start of the day (UTC) the row summarizes."),
            C("p10", FLOAT, "Lower band (10th percentile), daily maximum."),
            C("p50", FLOAT, "Median forecast, daily maximum."),
            C("p90", FLOAT, "Upper band (90th percentile), daily maximum."),
        ),
    )
)

"""The `targets` frame: one row per discovered target of a source (issue 16, docs/discovery.md).

Declared in the contract layer because both the discovery code (collector/sources/discovery/) that
fills it and the exporter that renders per-target self-metrics read it; neither imports the other.
"""

from __future__ import annotations

from collector.contract.schema import BOOL, FLOAT, STRING, TIMESTAMP, Column, FrameSchema, register

TARGETS = register(
    FrameSchema(
        name="targets",
        doc="Discovered targets of a source, with their lifecycle state and last poll outcome.",
        key=("source", "target"),
        columns=(
            Column("source", STRING, "Source name."),
            Column("target", STRING, "Target identity (the hypervisor host name, a file_sd target)."),
            Column("state", STRING, "active | disabled | gone (left the discovered list; its series ended)."),
            Column("pool", STRING, "`pool` label given to the target's frames (Nova AZ, file_sd label)."),
            Column("up", BOOL, "The target's last poll succeeded."),
            Column("polls_total", FLOAT, "Polls of this target since it was discovered."),
            Column("errors_total", FLOAT, "Failed polls of this target since it was discovered."),
            Column("last_error_reason", STRING, "Reason of the last failure.", nullable=True),
            Column("last_success", TIMESTAMP, "Time of the last successful poll.", nullable=True),
            Column("poll_duration_seconds", FLOAT, "Duration of the last poll.", nullable=True),
        ),
    )
)

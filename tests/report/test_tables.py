"""Report tables name the layer (issue 11 item 6): memory of a pool exists in both the hypervisor and the
openstack layer, and the same AZ has headroom rows in both; without the layer the rows look duplicated."""

from __future__ import annotations

import re

from exporters.report.content import BuildInputs, build_content
from exporters.report.render import render_html, render_text
from exporters.report.settings import ReportConfig


def test_every_table_row_is_distinct_with_its_layer(estate):
    snapshot = estate.snapshot()
    content = build_content(
        ReportConfig(name="t", recipients=["a@example.org"], top_n=500),
        BuildInputs(frames=snapshot.frames, now=snapshot.taken_at),
    )
    text = render_text(content)
    for section in ("HEADROOM", "POOLS (allocatable"):
        after = text.split(section, 1)[1].splitlines()[2:]  # past the title and its underline
        body = after[: next(i for i, line in enumerate(after) if not line.strip())]
        lines = [re.sub(r"\s+", " ", line.strip()) for line in body if not line.strip().startswith("...")]
        labels = [line.split(" ")[0:3] for line in lines]
        assert len(lines) > 1
        assert all(re.match(r"\S+/\S+ \((hypervisor|openstack|kubernetes)\)", line) for line in lines), lines[:3]
        assert len({tuple(label) for label in labels}) == len(labels), section
    html = render_html(content, [])
    headroom = html.split("Headroom by flavor and pod shape", 1)[1].split("</table>", 1)[0]
    for row in content.headroom:
        assert f"{row.layer} · {row.pool_kind.replace('_', ' ')}" in headroom
    details = html.split("Pools in detail", 1)[1].split("</table>", 1)[0]
    assert details.count('margin-left:16px;">openstack</div>') == sum(r.layer == "openstack" for r in content.pool_rows)


def test_report_thresholds_are_the_reports_own():
    """A report's utilization thresholds (config) set the band when there is no forecast yet."""
    from collector.analyses.report import current_figures, spec_of
    from tests.report.estate import SyntheticEstate

    estate = SyntheticEstate.build(seed=3)
    frames = estate.snapshot(derived=False, figures=False).frames
    strict = ReportConfig(name="strict", recipients=["a@example.org"], utilization_red=0.1, utilization_amber=0.05)
    default = ReportConfig(name="default", recipients=["a@example.org"])
    pools = current_figures(frames, None, estate.now, [spec_of(strict), spec_of(default)])["report_pools"]
    by_report = {name: group.set_index(["layer", "cloud", "pool"])["status"] for name, group in pools.groupby("report")}
    assert set(by_report["strict"]) == {"red"}
    assert (by_report["default"] != "red").any()
    assert set(pools["rule"]) == {"utilization"}

"""Rendering: the report's HTML and plain text (jinja2), its CSV attachments, and the MIME message.

The message is `multipart/mixed` holding a `multipart/alternative` (text/plain, then a
`multipart/related` of text/html and its inline PNGs, referenced by Content-ID) and the CSV
attachments. Mail relays and clients commonly cap a message at 10–25 MB, and large mails are
slow to open, so `compose_message` keeps the whole message under `ReportConfig.max_bytes`: it
drops growth charts first, then zips the CSVs, then shortens the tables; the CSV always holds
every pool.
"""

from __future__ import annotations

import base64
import csv
import io
import math
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path
from typing import Any

import jinja2

from exporters.report import units
from exporters.report.charts import COLORS
from exporters.report.model import HORIZONS_DAYS, Chart, ReportContent
from exporters.report.settings import ReportConfig

TEMPLATES = Path(__file__).parent / "templates"
RECLAIM_ORDER = ("vcpu", "cpu", "pcpu", "memory", "disk", "ephemeral_storage", "pods")


class ReportTooLarge(Exception):
    """Even the smallest form of the report exceeds the configured size bound."""


def _environment(autoescape: bool) -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        autoescape=autoescape,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters.update(
        days=units.format_days,
        dayrange=units.format_day_range,
        amount=lambda value, resource, signed=False: units.format_amount(resource, value, signed=signed),
        num=units.format_count,
        pct=units.format_percent,
        age=units.format_age,
        when=units.format_time,
        date=units.format_date,
    )
    env.tests["known"] = units.is_number
    return env


_HTML = _environment(autoescape=True)
_TEXT = _environment(autoescape=False)


def period_label(content: ReportContent) -> str:
    return f"week of {units.format_date(content.period, content.zone)}"


def _reclaim_resources(content: ReportContent) -> list[str]:
    seen = {r for row in content.reclaimable for r in row.amounts}
    return [r for r in RECLAIM_ORDER if r in seen] + sorted(seen - set(RECLAIM_ORDER))


def _context(
    content: ReportContent, charts: list[Chart], top_n: int, src: Callable[[Chart], str], csv_note: str
) -> dict[str, Any]:
    overview = next((c for c in charts if c.kind == "overview"), None)
    return {
        "c": content,
        "counts": content.counts,
        "colors": COLORS,
        "period_label": period_label(content),
        "overview": overview,
        "growth_charts": [c for c in charts if c is not overview],
        "src": src,
        "top_n": top_n,
        "horizons": HORIZONS_DAYS,
        "reclaim_resources": _reclaim_resources(content),
        "red_days": f"{content.red_days:g}",
        "amber_days": f"{content.amber_days:g}",
        "csv_note": csv_note,
    }


def render_html(
    content: ReportContent, charts: list[Chart], *, top_n: int | None = None, inline: bool = False, csv_note: str = ""
) -> str:
    """The HTML part; `inline` puts images in data: URIs (a standalone file), else `cid:` references."""

    def src(chart: Chart) -> str:
        if inline:
            return "data:image/png;base64," + base64.b64encode(chart.png).decode("ascii")
        return f"cid:{chart.cid}"

    return _HTML.get_template("report.html.j2").render(_context(content, charts, top_n or content.top_n, src, csv_note))


def render_text(content: ReportContent, *, top_n: int | None = None, csv_note: str = "") -> str:
    return _TEXT.get_template("report.txt.j2").render(
        _context(content, [], top_n or content.top_n, lambda chart: "", csv_note)
    )


# -- CSV ------------------------------------------------------------------------------------------------


def _cell(value: Any) -> str:
    """Full-precision numbers (the CSV is the engine's numbers, not rounded ones); unknown is empty."""
    if value is None:
        return ""
    if isinstance(value, float):
        if math.isnan(value):
            return ""
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, datetime):
        return value.isoformat()
    try:
        import pandas as pd

        if value is pd.NaT or (isinstance(value, pd.Timestamp) and pd.isna(value)):
            return ""
        if isinstance(value, pd.Timestamp):
            iso: str = value.isoformat()
            return iso
    except (TypeError, ValueError):
        pass
    return str(value)


POOL_COLUMNS = [
    "layer",
    "cloud",
    "pool",
    "resource",
    "unit",
    "status",
    "hosts",
    "capacity",
    "allocatable",
    "allocated",
    "used",
    "allocated_ratio",
    "used_ratio",
    "reclaimable",
]
FORECAST_COLUMNS = [
    "days_p10",
    "days_p50",
    "days_p90",
    "exhaustion_p10",
    "exhaustion_p50",
    "exhaustion_p90",
    "growth_per_day",
    "model",
    "mase",
]


def pools_csv(content: ReportContent) -> bytes:
    """One row per pool and resource, every number (both forecast bases side by side)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    header = POOL_COLUMNS + [f"{basis}_{column}" for basis in ("allocated", "used") for column in FORECAST_COLUMNS]
    writer.writerow(header)
    for row in content.pool_rows:
        cells = [
            row.layer,
            row.cloud,
            row.pool,
            row.resource,
            _unit(row.resource),
            row.status,
            row.hosts,
            row.capacity,
            row.allocatable,
            row.allocated,
            row.used,
            row.allocated_ratio,
            row.used_ratio,
            row.reclaimable,
        ]
        for basis in ("allocated", "used"):
            fields = row.forecasts.get(basis, {})
            cells.extend(fields.get(column) for column in FORECAST_COLUMNS)
        writer.writerow([_cell(c) for c in cells])
    return buffer.getvalue().encode("utf-8")


def headroom_csv(content: ReportContent) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(
        [
            "layer",
            "cloud",
            "pool_kind",
            "pool",
            "shape_kind",
            "shape",
            "slots",
            *[f"slots_{d}d" for d in HORIZONS_DAYS],
            "slots_after_failure",
            "failure_domain",
            "shortfall",
            "limiting_resource",
            "hosts",
        ]
    )
    for h in content.headroom:
        writer.writerow(
            [
                _cell(c)
                for c in (
                    h.layer,
                    h.cloud,
                    h.pool_kind,
                    h.pool,
                    h.shape_kind,
                    h.shape,
                    h.slots,
                    *[h.future[d] for d in HORIZONS_DAYS],
                    h.slots_after_failure,
                    h.failure_domain,
                    h.shortfall,
                    h.limiting_resource,
                    h.hosts,
                )
            ]
        )
    return buffer.getvalue().encode("utf-8")


def _unit(resource: str) -> str:
    from collector.contract.schema import resource_unit

    return resource_unit(resource)


def attachments(content: ReportContent) -> dict[str, bytes]:
    stamp = units.format_date(content.period, content.zone)
    files = {f"capacity-{content.name}-{stamp}-pools.csv": pools_csv(content)}
    if content.headroom:
        files[f"capacity-{content.name}-{stamp}-headroom.csv"] = headroom_csv(content)
    return files


def _zip(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return buffer.getvalue()


# -- the message ----------------------------------------------------------------------------------------


@dataclass
class ComposedMessage:
    message: EmailMessage
    size: int
    charts: int
    top_n: int
    zipped: bool


def subject(content: ReportContent) -> str:
    counts = content.counts
    parts = []
    if counts["red"]:
        parts.append(f"{counts['red']} red")
    if counts["amber"]:
        parts.append(f"{counts['amber']} amber")
    state = ", ".join(parts) if parts else "all green"
    return f"{content.title}: {state} — {period_label(content)}"


def _variants(config: ReportConfig, charts: int) -> Iterator[tuple[int, int, bool]]:
    """(growth charts kept, table rows, zip CSV) from the richest message to the smallest."""
    counts = sorted({charts, charts // 2, min(charts, 2), 0}, reverse=True)
    for zipped in (False, True):
        for count in counts:
            yield count, config.top_n, zipped
    for top_n in (max(5, config.top_n // 2), 5):
        if top_n < config.top_n:
            yield 0, top_n, True


def compose_message(
    content: ReportContent, config: ReportConfig, charts: list[Chart], *, sender: str, period_key: str
) -> ComposedMessage:
    """The MIME message, as rich as fits under `config.max_bytes` (raises ReportTooLarge otherwise)."""
    files = attachments(content)
    overview = [c for c in charts if c.kind == "overview"]
    growth = [c for c in charts if c not in overview]
    domain = sender.rpartition("@")[2] or "capacityd"
    for count, top_n, zipped in _variants(config, len(growth)):
        kept = overview + growth[:count]
        csv_note = "zipped to keep this mail small" if zipped else ""
        message = EmailMessage()
        message["Subject"] = subject(content)
        message["From"] = sender
        message["To"] = ", ".join(config.recipients)
        message["Date"] = format_datetime(content.generated_at)
        message["Message-ID"] = make_msgid(idstring=f"report.{content.name}", domain=domain)
        message["Auto-Submitted"] = "auto-generated"
        message["X-Capacityd-Report"] = content.name
        message["X-Capacityd-Period"] = period_key
        message.set_content(render_text(content, top_n=top_n, csv_note=csv_note), subtype="plain", charset="utf-8")
        message.add_alternative(
            render_html(content, kept, top_n=top_n, csv_note=csv_note), subtype="html", charset="utf-8"
        )
        html_part = list(message.iter_parts())[1]
        for chart in kept:
            html_part.add_related(
                chart.png,
                maintype="image",
                subtype="png",
                cid=f"<{chart.cid}>",
                filename=f"{chart.cid.split('@')[0]}.png",
                disposition="inline",
            )
        if zipped:
            stamp = units.format_date(content.period, content.zone)
            message.add_attachment(
                _zip(files), maintype="application", subtype="zip", filename=f"capacity-{content.name}-{stamp}.zip"
            )
        else:
            for name, data in files.items():
                message.add_attachment(data, maintype="text", subtype="csv", filename=name)
        size = len(message.as_bytes())
        if size <= config.max_bytes:
            return ComposedMessage(message, size, len(kept), top_n, zipped)
    raise ReportTooLarge(
        f"report {content.name!r}: even without charts and with zipped CSVs the mail is "
        f"{size:,} bytes, above max_bytes={config.max_bytes:,}; raise max_bytes or narrow the scope"
    )


def write_html(content: ReportContent, charts: list[Chart], path: Path, *, with_csv: bool = True) -> Path:
    """A standalone HTML file (images inlined as data: URIs), with the CSVs written beside it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    note = ""
    if with_csv:
        for name, data in attachments(content).items():
            (path.parent / name).write_bytes(data)
        note = "written beside this file"
    html = render_html(content, charts, inline=True, csv_note=note)
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(html, encoding="utf-8")
    temporary.replace(path)
    return path

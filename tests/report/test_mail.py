"""The report as a mail, end to end: built from frames + real History, sent over real SMTP
(aiosmtpd on loopback, STARTTLS or implicit TLS, with authentication), parsed back and checked.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import re
import zipfile
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage

import numpy as np
import pandas as pd
import pytest

from collector.estate import Snapshot
from exporters.prometheus.exposition import render
from exporters.report import metrics
from exporters.report.service import latest_period, send_report
from exporters.report.store import SendStore
from tests.report.chromium import probe_images
from tests.report.conftest import PASSWORD, make_config, start_server
from tests.report.estate import SyntheticEstate


def parts(message: EmailMessage) -> dict[str, list[EmailMessage]]:
    out: dict[str, list[EmailMessage]] = {}
    for part in message.walk():
        out.setdefault(part.get_content_type(), []).append(part)  # type: ignore[arg-type]
    return out


def check_structure(message: EmailMessage) -> tuple[str, str, dict[str, bytes]]:
    """Multipart layout, every image referenced and present; returns (html, text, images by cid)."""
    assert message.get_content_type() == "multipart/mixed"
    found = parts(message)
    assert len(found["multipart/alternative"]) == 1
    [text_part] = found["text/plain"]
    [html_part] = found["text/html"]
    alternative = found["multipart/alternative"][0].get_payload()
    assert alternative[0].get_content_type() == "text/plain"  # type: ignore[index]
    # With images, the HTML and its images form a multipart/related; without, the HTML stands alone.
    expected = "multipart/related" if found.get("image/png") else "text/html"
    assert alternative[1].get_content_type() == expected  # type: ignore[index]
    html = html_part.get_content()
    images = {}
    for part in found.get("image/png", []):
        cid = part["Content-ID"].strip("<>")
        data = part.get_content()
        assert data.startswith(b"\x89PNG\r\n\x1a\n"), cid
        images[cid] = data
    referenced = set(re.findall(r'src="cid:([^"]+)"', html))
    assert referenced == set(images), (referenced, set(images))
    assert "<script" not in html.lower()
    assert not re.search(r'src="(?!cid:)', html), "the mail's HTML may only reference inline parts"
    return html, text_part.get_content(), images


def csv_attachments(message: EmailMessage) -> dict[str, str]:
    files = {}
    for part in message.iter_attachments():
        name = part.get_filename()
        if part.get_content_type() == "text/csv":
            files[name] = part.get_content()
        elif part.get_content_type() == "application/zip":
            with zipfile.ZipFile(io.BytesIO(part.get_content())) as archive:
                for member in archive.namelist():
                    files[member] = archive.read(member).decode("utf-8")
    return files


def engine_pool_numbers(snapshot: Snapshot) -> pd.DataFrame:
    """What the engine says per pool and resource, computed here independently of the report code."""
    capacity = snapshot.frames["capacity"]
    sums = capacity.groupby(["layer", "cloud", "pool", "resource"])[["capacity", "allocatable", "allocated", "used"]]
    totals = sums.sum(min_count=1).reset_index()
    forecast = snapshot.frames["forecast"]
    allocated = forecast[forecast["basis"] == "allocated"][["layer", "cloud", "pool", "resource", "seconds_p50"]]
    return totals.merge(allocated, on=["layer", "cloud", "pool", "resource"], how="left")


def test_mail_over_starttls_carries_the_engines_numbers(
    tmp_path, estate, estate_history, smtp_server, certificate, caplog
):
    caplog.set_level(logging.DEBUG)
    config = make_config(tmp_path / "state", smtp_server, certificate)
    report, store = config.reports[0], SendStore.open(config.state_dir)
    snapshot = estate.snapshot(history=estate_history)
    period = latest_period(report, snapshot.taken_at)
    outcome = send_report(report, config.smtp, snapshot, estate_history, store, period)
    assert outcome.status == "sent", outcome.detail
    [received] = smtp_server.handler.messages
    assert received.mail_from == "capacityd@example.org"
    assert sorted(received.rcpt_tos) == ["planners@example.org", "sre@example.org"]
    message = received.message
    assert message["X-Capacityd-Report"] == "weekly"
    assert "red" in message["Subject"] and "week of" in message["Subject"]
    html, text, images = check_structure(message)
    assert len(images) >= 2  # the overview and at least one growth chart
    for heading in (
        "Summary",
        "Headroom by flavor and pod shape",
        "Top growers this week",
        "Reclaimable capacity",
        "Pools in detail",
        "Data quality",
        "How last month",
    ):
        assert heading in html, heading
    # The most urgent pool (88 % allocated, fast growth) is red and first; the down source is noted.
    assert re.search(r"\[RED\s*\] az1 \(openstack\)", text)
    assert "k8s-1-api (kubernetes): down" in text
    assert "N+1: FAILS" in text

    files = csv_attachments(message)
    [pools_name] = [n for n in files if n.endswith("-pools.csv")]
    rows = list(csv.DictReader(io.StringIO(files[pools_name])))
    engine = engine_pool_numbers(snapshot)
    assert len(rows) == len(engine)
    by_key = {(r["layer"], r["cloud"], r["pool"], r["resource"]): r for r in rows}
    for expected in engine.itertuples(index=False):
        row = by_key[(expected.layer, expected.cloud, expected.pool, expected.resource)]
        for column in ("capacity", "allocatable", "allocated", "used"):
            value = getattr(expected, column)
            if pd.isna(value):
                assert row[column] == "", (column, row)
            else:
                assert float(row[column]) == value, (column, row[column], value)
        seconds = expected.seconds_p50
        if pd.isna(seconds):
            assert row["allocated_days_p50"] == ""
        elif math.isinf(seconds):
            assert row["allocated_days_p50"] == "inf"
        else:
            assert np.isclose(float(row["allocated_days_p50"]), seconds / 86400.0, rtol=1e-12)
    headroom_rows = list(csv.DictReader(io.StringIO(files[next(n for n in files if n.endswith("-headroom.csv"))])))
    assert len(headroom_rows) == len(snapshot.frames["headroom"])

    # The record says sent; the same period never goes out twice.
    assert store.is_sent("weekly", period)
    again = send_report(report, config.smtp, snapshot, estate_history, store, period)
    assert again.status == "skipped"
    assert len(smtp_server.handler.messages) == 1
    assert metrics.states()["weekly"].last_success is not None
    assert PASSWORD not in caplog.text

    # The same mail, opened in headless Chromium the way a mail client shows it (cid: -> the parts).
    folder = tmp_path / "mail"
    folder.mkdir()
    for cid, data in images.items():
        (folder / f"{cid.split('@')[0]}.png").write_bytes(data)
    local = re.sub(r'src="cid:([^"@]+)@[^"]*"', lambda m: f'src="{m.group(1)}.png"', html)
    (folder / "mail.html").write_text(local, encoding="utf-8")
    probe = probe_images(folder / "mail.html")
    assert probe.total == len(images) and not probe.broken, probe
    assert all(" 720x" in line for line in probe.loaded), probe.loaded


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")  # aiosmtpd: SMTPS is TLS
def test_implicit_tls_and_the_standalone_file(tmp_path, estate, estate_history, certificate):
    server = start_server(certificate, "tls")
    try:
        config = make_config(tmp_path / "state", server, certificate)
        report = config.reports[0]
        snapshot = estate.snapshot()
        outcome = send_report(
            report, config.smtp, snapshot, estate_history, SendStore.open(config.state_dir), snapshot.taken_at
        )
        assert outcome.status == "sent", outcome.detail
        assert len(server.handler.messages) == 1
        check_structure(server.handler.messages[0].message)
    finally:
        server.stop()
    # The file output (capacityd report --out / capacityd demo) inlines images as data: URIs.
    from exporters.report import write_report

    path = write_report(snapshot, estate_history, tmp_path / "out")
    probe = probe_images(path)
    assert probe.total >= 2 and not probe.broken, probe
    assert list((tmp_path / "out").glob("*-pools.csv"))


def test_authentication_failure_is_a_clear_error_not_a_crash(
    tmp_path, estate, smtp_server, certificate, monkeypatch, caplog
):
    monkeypatch.setenv("CAPACITYD_TEST_SMTP_PASSWORD", "wrong-password-also-secret")
    config = make_config(tmp_path / "state", smtp_server, certificate)
    report, store = config.reports[0], SendStore.open(config.state_dir)
    snapshot = estate.snapshot()
    with caplog.at_level(logging.DEBUG):
        outcome = send_report(report, config.smtp, snapshot, None, store, snapshot.taken_at)
    assert outcome.status == "failed"
    assert "authentication failed for user 'capacityd'" in outcome.detail
    assert "535" in outcome.detail
    assert "attempts" not in outcome.detail  # permanent: not retried
    assert smtp_server.handler.messages == []
    assert "wrong-password-also-secret" not in caplog.text and PASSWORD not in caplog.text
    record = store.get("weekly", snapshot.taken_at)
    assert record is not None and record.status == "failed" and "authentication" in (record.error or "")
    exposition = render(snapshot).decode()
    assert 'capacityd_report_failures_total{report="weekly"} 1.0' in exposition
    assert "capacityd_report_last_success_timestamp_seconds{" not in exposition
    # Fix the password: the same period now goes out (a failed period is not "sent").
    monkeypatch.setenv("CAPACITYD_TEST_SMTP_PASSWORD", PASSWORD)
    assert send_report(report, config.smtp, snapshot, None, store, snapshot.taken_at).status == "sent"
    assert 'capacityd_report_last_success_timestamp_seconds{report="weekly"}' in render(snapshot).decode()


def test_missing_password_variable_and_untrusted_certificate(tmp_path, estate, smtp_server, certificate, monkeypatch):
    snapshot = estate.snapshot()
    monkeypatch.delenv("CAPACITYD_TEST_SMTP_PASSWORD")
    config = make_config(tmp_path / "state", smtp_server, certificate)
    outcome = send_report(
        config.reports[0], config.smtp, snapshot, None, SendStore.open(config.state_dir), snapshot.taken_at
    )
    assert outcome.status == "failed"
    assert "CAPACITYD_TEST_SMTP_PASSWORD is not set" in outcome.detail
    monkeypatch.setenv("CAPACITYD_TEST_SMTP_PASSWORD", PASSWORD)
    config.smtp.ca_file = None  # the system CAs do not know the self-signed relay
    outcome = send_report(
        config.reports[0], config.smtp, snapshot, None, SendStore.open(config.state_dir), snapshot.taken_at
    )
    assert outcome.status == "failed" and "certificate does not verify" in outcome.detail
    assert smtp_server.handler.messages == []


def test_transient_failures_are_retried_with_backoff(tmp_path, estate, smtp_server, certificate):
    smtp_server.handler.fail_next = 2  # 451 twice, then accepted
    config = make_config(tmp_path / "state", smtp_server, certificate)
    snapshot = estate.snapshot()
    outcome = send_report(
        config.reports[0], config.smtp, snapshot, None, SendStore.open(config.state_dir), snapshot.taken_at
    )
    assert outcome.status == "sent", outcome.detail
    assert len(smtp_server.handler.messages) == 1
    # A relay that is not there at all: every attempt fails, the error says where and how often.
    config.smtp.port = smtp_server.port + 1 if smtp_server.port < 65535 else 1
    period = snapshot.taken_at - timedelta(days=7)
    outcome = send_report(config.reports[0], config.smtp, snapshot, None, SendStore.open(config.state_dir), period)
    assert outcome.status == "failed"
    assert "cannot connect" in outcome.detail and "after 3 attempts" in outcome.detail


def test_no_history_yet_still_goes_out(tmp_path, smtp_server, certificate):
    estate = SyntheticEstate.build(seed=3)
    snapshot = estate.snapshot(derived=False)  # a fresh daemon: no forecasts, no headroom yet
    config = make_config(tmp_path / "state", smtp_server, certificate)
    outcome = send_report(
        config.reports[0], config.smtp, snapshot, None, SendStore.open(config.state_dir), snapshot.taken_at
    )
    assert outcome.status == "sent", outcome.detail
    html, text, images = check_structure(smtp_server.handler.messages[0].message)
    assert "No history yet" in text and "No history yet" in html
    assert "Forecasts have not been computed yet" in text
    assert "Needs history" in text  # top growers
    assert images == {}  # nothing to chart yet
    # Pools are still judged, by utilization.
    assert "(no forecast yet)" in text


def test_a_source_missing_all_week(tmp_path, smtp_server, certificate):
    estate = SyntheticEstate.build(seed=4, down_sources={"cloud-a-nova": timedelta(days=9)})
    history = estate.history(tmp_path / "history")
    try:
        config = make_config(tmp_path / "state", smtp_server, certificate)
        snapshot = estate.snapshot()
        outcome = send_report(
            config.reports[0], config.smtp, snapshot, history, SendStore.open(config.state_dir), snapshot.taken_at
        )
    finally:
        history.close()
    assert outcome.status == "sent", outcome.detail
    _, text, _ = check_structure(smtp_server.handler.messages[0].message)
    assert "cloud-a-nova (openstack): missing for 9 d" in text
    assert "no successful poll all week" in text
    for pool in ("az1", "az2", "az3"):
        assert re.search(rf"cloud-a/{pool} \(openstack\): gap .* no data recorded in the last week", text), pool


def test_huge_estate_stays_under_the_size_bound(tmp_path, smtp_server, certificate):
    estate = SyntheticEstate.build(seed=5, clouds=6, clusters=2, pools_per_cloud=40, hosts=2)
    snapshot = estate.snapshot(horizon_days=95)
    bound = 400_000
    config = make_config(tmp_path / "state", smtp_server, certificate, max_bytes=bound, top_n=15, charts=8)
    outcome = send_report(
        config.reports[0], config.smtp, snapshot, None, SendStore.open(config.state_dir), snapshot.taken_at
    )
    assert outcome.status == "sent", outcome.detail
    [received] = smtp_server.handler.messages
    assert len(received.data) <= bound
    message = received.message
    html, _text, _ = check_structure(message)
    pools = snapshot.frames["capacity"][["layer", "cloud", "pool", "resource"]].drop_duplicates()
    files = csv_attachments(message)
    rows = list(csv.DictReader(io.StringIO(next(v for k, v in files.items() if k.endswith("-pools.csv")))))
    assert len(rows) == len(pools) > 700  # the CSV holds every pool
    assert "the attached CSV has all of them" in html
    assert html.count("<tr>") < 200  # the mail holds the top N only


def test_forecasts_stored_with_a_send_are_checked_a_month_later(tmp_path, smtp_server, certificate):
    now = datetime(2026, 11, 23, 6, 0, tzinfo=UTC)
    config = make_config(tmp_path / "state", smtp_server, certificate)
    store = SendStore.open(config.state_dir)
    earlier = SyntheticEstate.build(now=now - timedelta(days=28), seed=6)
    first = send_report(config.reports[0], config.smtp, earlier.snapshot(), None, store, now - timedelta(days=28))
    assert first.status == "sent", first.detail
    later = SyntheticEstate.build(now=now, seed=6)
    second = send_report(config.reports[0], config.smtp, later.snapshot(), None, store, now)
    assert second.status == "sent", second.detail
    _, text, _ = check_structure(smtp_server.handler.messages[1].message)
    section = text.split("HOW LAST MONTH'S FORECASTS FARED")[1]
    assert "Compares the forecasts sent a month ago" in section
    assert re.search(r"cloud-a/az1\s+\w+ allocated: forecast .* actual .* error [+-]\d", section)
    # Week-on-week: the earlier send's summary is what "change since last week" compares with.
    assert store.last_sent("weekly", before=now).period == now - timedelta(days=28)


def test_backtest_accuracy_from_history(tmp_path, estate, estate_history, smtp_server, certificate):
    """Re-forecast from the history of 30 days ago with the real engine and compare with today."""
    config = make_config(tmp_path / "state", smtp_server, certificate, accuracy_backtest=True, top_n=3)
    snapshot = estate.snapshot(history=estate_history, reports=config.reports, backtest=True)
    outcome = send_report(
        config.reports[0], config.smtp, snapshot, estate_history, SendStore.open(config.state_dir), snapshot.taken_at
    )
    assert outcome.status == "sent", outcome.detail
    _, text, _ = check_structure(smtp_server.handler.messages[0].message)
    section = text.split("HOW LAST MONTH'S FORECASTS FARED")[1]
    assert "forecasts re-made from the history of 30 days ago" in section
    errors = [float(x) for x in re.findall(r"error ([+-]\d+\.\d) %", section)]
    assert len(errors) == 3
    # Demand in the synthetic estate grows linearly, so a month-old forecast lands close.
    assert all(abs(e) < 15 for e in errors), errors


def test_bad_report_config_is_refused_with_locations(tmp_path):
    from collector.app.config import parse_config
    from collector.contract.settings import ConfigError

    with pytest.raises(ConfigError) as error:
        parse_config(
            {
                "smtp": {"host": "relay", "from": "not-an-address", "password": "x", "password_env": "Y"},
                "reports": [{"name": "w", "recipients": [], "schedule": "0 7 * *", "timezone": "Mars/Base"}],
            }
        )
    text = "; ".join(error.value.errors)
    assert "smtp.from" in text and "reports[0].recipients" in text and "reports[0].schedule" in text
    assert "reports[0].timezone" in text
    assert "x" not in [part.strip() for part in text.split(":")]  # the inline password is never echoed

"""Body of the report send-guard tests against the REAL kube-apiserver 1.20; runs INSIDE a private network namespace.

Started by tests/cluster/test_report_guard.py through `run_in_private_netns`. It observes:
- in this process, two electors on one Lease with a `LeaseSendGuard` each: the guard refuses a second send of a
  period across the fail-over, fences the old leader, and survives the elector's renewals;
- real processes: one collector, a real SMTP server (aiosmtpd, plain, loopback) and two pairs of
  `capacityd run --role planner` with the same daily report due at the coming minute. Pair one: the leader sends,
  then is killed -9, and the standby that takes over (and catches the period up) must not send it again. Pair two:
  the leader is killed -9 two seconds before the send time, and the standby must send it, once.
It prints one JSON document of observations; the test asserts on it.
"""

from __future__ import annotations

import json
import sys
import time
import traceback
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller

from collector.app.cluster.leader import LeaderElector
from collector.app.cluster.leases import LeaseStore, api_client
from collector.app.cluster.report_guard import LeaseSendGuard
from tests.cluster.harness import Collector, free_port, libvirt_sources, wait_for, write_config
from tests.cluster.lease_body import grant_leases
from tests.report.conftest import Handler
from tests.services.kube_apiserver import KubeApiServer

LEASE = 3  # seconds
WEEK1, WEEK2, WEEK3 = "2026-11-30T07:00:00+00:00", "2026-12-07T07:00:00+00:00", "2026-12-14T07:00:00+00:00"


def guards_in_process(kubeconfig: Path) -> dict[str, Any]:
    store = LeaseStore(api_client(kubeconfig), "default")
    a = LeaderElector(store, "guard-a", prefix="guardtest", duration_seconds=LEASE)
    b = LeaderElector(store, "guard-b", prefix="guardtest", duration_seconds=LEASE)
    a.start()
    wait_for(a.is_leader, 20, "guard-a to lead")
    b.start()
    ga, gb = LeaseSendGuard(store, a), LeaseSendGuard(store, b)
    seen: dict[str, Any] = {"a_claims": ga.claim("weekly", WEEK1), "b_claims_as_standby": gb.claim("weekly", WEEK1)}
    ga.sent("weekly", WEEK1)
    seen["a_claims_again"] = ga.claim("weekly", WEEK1)
    time.sleep(3 * a.retry_period)  # a few renewals by the elector
    seen["entry_after_renewals"] = ga.last("weekly")
    seen["a_claims_week3"] = ga.claim("weekly-mid", WEEK3)  # claimed, never recorded sent: a dies mid-send
    a.stop(release=False)  # as kill -9: no release, the standby waits for expiry
    wait_for(b.is_leader, 20, "guard-b to take over")
    seen["b_claims_sent_week"] = gb.claim("weekly", WEEK1)
    seen["b_claims_mid_send_week"] = gb.claim("weekly-mid", WEEK3)
    seen["b_claims_next_week"] = gb.claim("weekly", WEEK2)
    seen["a_claims_after_losing"] = ga.claim("weekly", WEEK2)
    seen["b_claims_older_week"] = gb.claim("weekly-mid", WEEK1)
    gb.release("weekly", WEEK2)
    seen["entry_after_release"] = gb.last("weekly")
    seen["b_reclaims_after_failure"] = gb.claim("weekly", WEEK2)
    b.stop()
    return seen


def report_planners(workdir: Path, kubeconfig: Path) -> dict[str, Any]:
    handler = Handler()
    smtp_port = free_port()
    smtp = Controller(handler, hostname="127.0.0.1", port=smtp_port)
    smtp.start()
    running: list[Collector] = []
    try:
        collector_port = free_port()
        config = write_config(
            workdir / "collector.yaml",
            collector_port,
            workdir / "collector-state",
            libvirt_sources(2, "1s"),
            "  role: collector",
        )
        running.append(Collector(config, collector_port, workdir / "collector.log").start(wait=False))
        now = datetime.now(UTC)
        fire = now.replace(second=0, microsecond=0) + timedelta(minutes=1)
        if (fire - now).total_seconds() < 35:  # time to start, elect and pull before the send
            fire += timedelta(minutes=1)
        pairs: dict[str, list[Collector]] = {}
        for pair in ("one", "two"):
            for name in ("a", "b"):
                identity = f"planner-{pair}-{name}"
                port = free_port()
                config = write_config(
                    workdir / f"{identity}.yaml",
                    port,
                    workdir / f"{identity}-state",
                    [],
                    f"  role: planner\n  identity: {identity}\n  kubeconfig: {kubeconfig}\n"
                    f"  lease_prefix: pair-{pair}\n  lease_duration_seconds: {LEASE}\n  pull_interval_seconds: 1\n"
                    f"  collectors:\n    - http://127.0.0.1:{collector_port}",
                )
                config.write_text(
                    config.read_text() + f"smtp:\n  host: 127.0.0.1\n  port: {smtp_port}\n  security: none\n"
                    f"  from: capacityd@example.org\n  timeout: 10s\n"
                    f"reports:\n  - name: weekly-{pair}\n    recipients: [{pair}@example.org]\n"
                    f"    schedule: '{fire.minute} {fire.hour} * * *'\n    timezone: UTC\n"
                    f"    misfire_grace_time: 1h\n    accuracy_backtest: false\n"
                )
                process = Collector(config, port, workdir / f"{identity}.log").start(wait=False)
                running.append(process)
                pairs.setdefault(pair, []).append(process)
        for process in running:
            wait_for(process.answers, 60, f"{process.config_path.name} to serve")

        def leader(pair: str) -> Collector | None:
            leading = [p for p in pairs[pair] if p.value("capacityd_leader") == 1.0]
            return leading[0] if len(leading) == 1 else None

        def mails(pair: str) -> int:
            return sum(1 for m in handler.messages if m.rcpt_tos == [f"{pair}@example.org"])

        first_one = wait_for(lambda: leader("one"), 30, "pair one to elect a leader")
        first_two = wait_for(lambda: leader("two"), 30, "pair two to elect a leader")
        standby_one = next(p for p in pairs["one"] if p is not first_one)
        standby_two = next(p for p in pairs["two"] if p is not first_two)
        started_early = datetime.now(UTC) < fire - timedelta(seconds=5)
        # pair two: the leader dies two seconds before the send time
        time.sleep(max(0.0, (fire - timedelta(seconds=2) - datetime.now(UTC)).total_seconds()))
        first_two.kill9()
        # pair one: the leader sends; then it dies
        wait_for(lambda: mails("one") >= 1, 90, "pair one's leader to send", every=0.2)
        one_sent_at = datetime.now(UTC)
        first_one.kill9()
        wait_for(lambda: standby_one.value("capacityd_leader") == 1.0, 30, "pair one's standby to lead")
        wait_for(lambda: mails("two") >= 1, 90, "pair two's standby to send", every=0.2)
        two_sent_at = datetime.now(UTC)
        wait_for(
            lambda: "claimed or sent by another process" in standby_one.log_path.read_text(errors="replace"),
            30,
            "pair one's standby to catch the period up and be refused by the guard",
        )
        time.sleep(8)  # anything more would have arrived by now
        return {
            "fire": fire.isoformat(),
            "started_early": started_early,
            "mails_one": mails("one"),
            "mails_two": mails("two"),
            "one_sent_after_fire_seconds": (one_sent_at - fire).total_seconds(),
            "two_sent_after_fire_seconds": (two_sent_at - fire).total_seconds(),
            "standby_one_log": standby_one.log()[-1500:],
            "standby_two_log": standby_two.log()[-1500:],
            "standby_two_sent": "weekly-two" in standby_two.log_path.read_text(errors="replace")
            and " sent to 1 recipient" in standby_two.log_path.read_text(errors="replace"),
            "killed_two_log": first_two.log()[-800:],
        }
    finally:
        for process in running:
            process.stop()
        smtp.stop()


def main(workdir: Path) -> dict[str, Any]:
    with KubeApiServer(workdir / "api") as api:
        api.start(kubelets={})
        grant_leases(api)
        kubeconfig = api.kubeconfig("collector-token")
        return {
            "lease": LEASE,
            "inproc": guards_in_process(kubeconfig),
            "planners": report_planners(workdir, kubeconfig),
        }


if __name__ == "__main__":
    try:
        result = main(Path(sys.argv[1]))
    except Exception:  # noqa: BLE001 - reported to the test as JSON
        result = {"error": traceback.format_exc()}
    print(json.dumps(result))

"""Faults injected into the real `capacityd run` process: it stays alive, /metrics answers, the metric moved.

- hostile configs on SIGHUP (issue 12 item 2): the running config is kept and
  `capacityd_config_last_reload_successful` drops to 0 until a good file is loaded;
- a failing analysis (item 8): `capacityd_analysis_success` 0, its last good frames still exported, stale 1;
- wall-clock steps (item 3, libfaketime with the monotonic clock left alone, as NTP or `date -s` would):
  an hour back or forward neither stops polling nor fires a burst, and no exported timestamp is in the future.
"""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from collector.demo.standins.kubernetes import StandinApiServer, synthetic_cluster
from tests.foundation.test_config_hostile import CORPUS
from tests.foundation.test_daemon import NODE5, free_port, sample, scrape, scrape_when, wait_for

LIBFAKETIME = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1")


def node5_config(port: int, state: Path, interval: str = "2s", extra: str = "") -> str:
    return (
        textwrap.dedent(f"""\
        listen: 127.0.0.1:{port}
        state_dir: {state}
        sources:
          - kind: libvirt
            name: node5
            uri: test://{NODE5}
            interval: {interval}
        """)
        + extra
    )


class Daemon:
    """A `capacityd run` subprocess with its log; `argv_prefix` and `env` inject faults from outside."""

    def __init__(
        self,
        tmp_path: Path,
        text: str,
        port: int,
        *,
        env: dict[str, str] | None = None,
        python_prelude: str | None = None,
        prelude_args: list[str] | None = None,
    ):
        self.tmp_path, self.port = tmp_path, port
        self.config = tmp_path / "capacityd.yaml"
        self.config.write_text(text)
        self.log_path = tmp_path / "daemon.log"
        self._log = self.log_path.open("w")
        if python_prelude is None:
            argv = [sys.executable, "-m", "collector.app.cli", "run", "-c", str(self.config)]
        else:
            prelude = tmp_path / "prelude.py"
            prelude.write_text(python_prelude)
            argv = [sys.executable, str(prelude), *(prelude_args or []), "run", "-c", str(self.config)]
        self.process = subprocess.Popen(
            argv,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            cwd=Path(__file__).parents[2],
        )

    def metrics(self) -> str:
        assert self.process.poll() is None, f"daemon died:\n{self.log_path.read_text()[-3000:]}"
        return scrape(self.port)

    def value(self, name: str, **labels: str) -> float | None:
        return sample(self.metrics(), name, **labels)

    def wait_value(self, predicate, name: str, what: str, timeout: float = 30.0, **labels: str) -> float:
        def attempt():
            value = self.value(name, **labels)
            return (value,) if value is not None and predicate(value) else None  # a tuple: 0.0 is a result

        return float(wait_for(attempt, timeout=timeout, what=f"{what} ({name}{labels})")[0])

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self._log.close()


@pytest.fixture
def daemons():
    started: list[Daemon] = []

    def start(*args, **kwargs) -> Daemon:
        daemon = Daemon(*args, **kwargs)
        started.append(daemon)
        return daemon

    yield start
    for daemon in started:
        daemon.close()


# -- reload ------------------------------------------------------------------------------------------------

HOSTILE_RELOADS = [
    "huge_duration",
    "days_beyond_scheduler",
    "interval_over_a_day",
    "sub_millisecond",
    "inf",
    "float_1e300",
    "non_utf8",
    "deep_nesting",
    "digits_5000",
    "billion_laughs",
    "binary",
]


def test_a_hostile_reload_keeps_the_running_config_and_shows_in_metrics(tmp_path, daemons):
    port = free_port()
    good = node5_config(port, tmp_path / "state")
    daemon = daemons(tmp_path, good, port)
    daemon.wait_value(lambda v: v == 1, "capacityd_source_up", "first poll", source="node5")
    assert daemon.value("capacityd_config_last_reload_successful") == 1
    loaded_at = daemon.value("capacityd_config_last_reload_success_timestamp_seconds")
    assert loaded_at is not None and abs(loaded_at - time.time()) < 120

    for name in HOSTILE_RELOADS:
        daemon.config.write_bytes(CORPUS[name][0])
        daemon.process.send_signal(signal.SIGHUP)
        daemon.wait_value(lambda v: v == 0, "capacityd_config_last_reload_successful", f"refused reload {name}")
        assert daemon.value("capacityd_config_last_reload_success_timestamp_seconds") == loaded_at
        polls = daemon.value("capacityd_source_polls_total", source="node5")
        # the running config goes on: node5 is still polled every 2 s
        daemon.wait_value(
            lambda v, p=polls: v > p, "capacityd_source_polls_total", f"polling after {name}", source="node5"
        )
        assert daemon.value("capacityd_source_up", source="node5") == 1

        daemon.config.write_text(good)
        daemon.process.send_signal(signal.SIGHUP)
        daemon.wait_value(lambda v: v == 1, "capacityd_config_last_reload_successful", f"good reload after {name}")
        stamp = daemon.value("capacityd_config_last_reload_success_timestamp_seconds")
        assert stamp is not None and stamp > loaded_at
        loaded_at = stamp

    log = daemon.log_path.read_text()
    assert log.count("reload refused, keeping the running config") == len(HOSTILE_RELOADS)
    assert "Traceback" not in log
    assert "sources[0].interval: " in log and "nested deeper than" in log and "not UTF-8" in log


DEFAULT_SOURCE = "  - kind: libvirt\n    name: default\n    uri: test:///default\n    interval: {interval}\n"


def test_a_refused_reload_is_followed_by_the_good_file_applied(tmp_path, daemons):
    """A reload that adds a source with a bad interval applies nothing, not even the valid parts."""
    port = free_port()
    daemon = daemons(tmp_path, node5_config(port, tmp_path / "state"), port)
    daemon.wait_value(lambda v: v == 1, "capacityd_source_up", "first poll", source="node5")
    daemon.config.write_text(node5_config(port, tmp_path / "state") + DEFAULT_SOURCE.format(interval="100000000d"))
    daemon.process.send_signal(signal.SIGHUP)
    daemon.wait_value(lambda v: v == 0, "capacityd_config_last_reload_successful", "refused reload")
    assert "sources[1].interval: " in daemon.log_path.read_text()
    time.sleep(2.5)
    assert daemon.value("capacityd_source_up", source="default") is None
    assert daemon.value("capacityd_source_up", source="node5") == 1

    # a good file, then one whose web config is broken: refused whole, its new source never starts
    good_with_default = node5_config(port, tmp_path / "state") + DEFAULT_SOURCE.format(interval="2s")
    daemon.config.write_text(good_with_default)
    daemon.process.send_signal(signal.SIGHUP)
    daemon.wait_value(lambda v: v == 1, "capacityd_source_up", "source added by a good reload", source="default")
    assert daemon.value("capacityd_config_last_reload_successful") == 1
    web = tmp_path / "web.yml"
    web.write_text("basic_auth_users:\n  alice: not-a-bcrypt-hash\n")
    daemon.config.write_text(f"web_config_file: {web}\n" + node5_config(port, tmp_path / "state"))
    daemon.process.send_signal(signal.SIGHUP)
    daemon.wait_value(lambda v: v == 0, "capacityd_config_last_reload_successful", "refused web config")
    time.sleep(2.5)
    assert daemon.value("capacityd_source_up", source="default") == 1, "a refused reload must remove nothing"
    assert "reload refused, keeping the running config: web config" in daemon.log_path.read_text()


# -- analyses ----------------------------------------------------------------------------------------------

PRELUDE = textwrap.dedent('''\
    """Run capacityd with the headroom analysis made to fail while a flag file exists (fault injection)."""
    import os
    import sys
    from pathlib import Path

    sys.path.insert(0, os.getcwd())  # this checkout, as `python -m collector.app.cli` would import it
    from collector.analyses import registry

    registry.load_builtin_analyses()
    flag = Path(sys.argv[1])
    real = registry.ANALYSES["headroom"]


    def headroom_with_fault(context):
        if flag.exists():
            raise RuntimeError("injected fault: headroom analysis broken")
        return real.func(context)


    registry.ANALYSES["headroom"] = registry.RegisteredAnalysis("headroom", headroom_with_fault, real.expensive)
    from collector.app.cli import main

    sys.exit(main(sys.argv[2:]))
    ''')


@pytest.fixture
def kube_standin(tmp_path):
    server = StandinApiServer(tmp_path / "kube")
    nodes, pods = synthetic_cluster(3, 30)
    server.set_nodes(nodes)
    server.set_pods(pods)
    kubeconfig = server.kubeconfig(tmp_path / "kube" / "kubeconfig", context="standin")
    yield kubeconfig
    server.stop()


def test_a_failing_analysis_is_visible_and_keeps_its_last_good_result(tmp_path, daemons, kube_standin):
    port = free_port()
    flag = tmp_path / "break-headroom"
    text = textwrap.dedent(f"""\
        listen: 127.0.0.1:{port}
        state_dir: {tmp_path / "state"}
        shapes:
          small: {{cpu: 500m, memory: 1Gi}}
        sources:
          - kind: kubernetes
            name: kube
            kubeconfig: {kube_standin}
            context: standin
            interval: 2s
        """)
    daemon = daemons(tmp_path, text, port, python_prelude=PRELUDE, prelude_args=[str(flag)])
    daemon.wait_value(lambda v: v == 1, "capacityd_analysis_success", "headroom ran", analysis="headroom")
    good = scrape_when(port, lambda t: "capacity_headroom_slots{" in t, what="headroom samples")
    slots = [line for line in good.splitlines() if line.startswith("capacity_headroom_slots{")]
    assert slots
    assert sample(good, "capacityd_analysis_stale", analysis="headroom") == 0
    assert sample(good, "capacityd_analysis_duration_seconds", analysis="headroom") > 0
    last_ok = sample(good, "capacityd_analysis_last_success_timestamp_seconds", analysis="headroom")
    assert last_ok is not None and abs(last_ok - time.time()) < 60

    flag.touch()
    daemon.wait_value(lambda v: v == 0, "capacityd_analysis_success", "headroom failing", analysis="headroom")
    polls = daemon.value("capacityd_source_polls_total", source="kube")
    daemon.wait_value(lambda v: v >= polls + 2, "capacityd_source_polls_total", "polls go on", source="kube")
    failing = daemon.metrics()
    assert sample(failing, "capacityd_analysis_success", analysis="headroom") == 0
    assert sample(failing, "capacityd_analysis_stale", analysis="headroom") == 1
    assert sample(failing, "capacityd_analysis_success", analysis="reclaimable") == 1  # the others go on
    stuck = sample(failing, "capacityd_analysis_last_success_timestamp_seconds", analysis="headroom")
    assert stuck is not None and stuck <= time.time() - 1
    still = [line for line in failing.splitlines() if line.startswith("capacity_headroom_slots{")]
    assert [line.rpartition(" ")[0] for line in still] == [line.rpartition(" ")[0] for line in slots]

    flag.unlink()
    daemon.wait_value(lambda v: v == 1, "capacityd_analysis_success", "headroom recovered", analysis="headroom")
    recovered = daemon.metrics()
    assert sample(recovered, "capacityd_analysis_stale", analysis="headroom") == 0
    assert sample(recovered, "capacityd_analysis_last_success_timestamp_seconds", analysis="headroom") > stuck
    assert "injected fault: headroom analysis broken" in daemon.log_path.read_text()


# -- the analysis worker ----------------------------------------------------------------------------------


def analysis_plugin(tmp_path: Path, module: str, source: str) -> dict[str, str]:
    """Install a test analysis plugin (a real `capacityd.analyses` entry point, loaded after the built-in ones)
    on a path of its own; returns the environment that puts it on the daemon's path, and so on its worker's."""
    root = tmp_path / "plugins"
    root.mkdir(exist_ok=True)
    (root / f"{module}.py").write_text(textwrap.dedent(source))
    dist = root / f"{module}-0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module}\nVersion: 0\n")
    (dist / "entry_points.txt").write_text(f"[capacityd.analyses]\nzz_{module} = {module}\n")
    return {"PYTHONPATH": str(root)}


SLOW_READ_PLUGIN = """\
    \"\"\"The forecast analysis starts by a ~2 s history read, after writing its process id (a stop lands in it).\"\"\"
    import os
    from pathlib import Path

    from collector.analyses import registry

    real = registry.ANALYSES["forecast"]
    SLOW = "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < 6000000) SELECT sum(x) FROM n"


    def forecast_after_a_slow_read(context):
        with context.history._read() as con:  # the path every history read takes
            Path(os.environ["CAPACITYD_TEST_READING"]).write_text(str(os.getpid()))
            con.execute(SLOW).fetchone()
        return real.func(context)


    registry.ANALYSES["forecast"] = registry.RegisteredAnalysis("forecast", forecast_after_a_slow_read, True)
    """


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_a_stop_during_the_forecast_pass_exits_cleanly_and_leaves_no_worker(tmp_path, daemons):
    """SIGTERM while the pass' worker reads history: the daemon kills its worker, exits 0, history intact (in
    the daemon's own process, the store once closed a connection under a running query: SIGSEGV)."""
    port = free_port()
    reading = tmp_path / "reading"
    env = analysis_plugin(tmp_path, "slow_read_fault", SLOW_READ_PLUGIN)
    env["CAPACITYD_TEST_READING"] = str(reading)
    daemon = daemons(tmp_path, node5_config(port, tmp_path / "state"), port, env=env)
    wait_for(lambda: reading.exists() and reading.read_text(), timeout=60, what="the forecast pass reading history")
    worker = int(reading.read_text())
    assert worker != daemon.process.pid  # the pass runs in its own process
    daemon.process.send_signal(signal.SIGTERM)
    assert daemon.process.wait(30) == 0, daemon.log_path.read_text()[-3000:]
    wait_for(lambda: _gone(worker), timeout=10, what=f"the worker (pid {worker}) gone with the daemon")
    log = daemon.log_path.read_text()
    assert "Fatal Python error" not in log and "reads still running" not in log, log[-3000:]
    assert f"killing the analysis worker (pid {worker})" in log
    assert "analysis worker:" not in log.split("killing the analysis worker")[1]  # a stop is not a failure
    con = sqlite3.connect(tmp_path / "state" / "history.sqlite")
    assert con.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    con.close()


FAULTY_WORKER_PLUGIN = """\
    \"\"\"The forecast analysis does what a mode file says: run, hang, or die as the kernel's OOM killer does it.\"\"\"
    import os
    import signal
    import time
    from pathlib import Path

    from collector.analyses import registry

    real = registry.ANALYSES["forecast"]
    MODE = Path(os.environ["CAPACITYD_TEST_MODE"])


    def forecast_with_faults(context):
        mode = MODE.read_text().strip()
        (MODE.parent / "passes").open("a").write(f"{os.getpid()} {mode}\\n")
        if mode == "hang":
            time.sleep(600)
        if mode == "die":
            os.kill(os.getpid(), signal.SIGKILL)
        return real.func(context)


    registry.ANALYSES["forecast"] = registry.RegisteredAnalysis("forecast", forecast_with_faults, True)
    """

FAST_PASSES_PRELUDE = textwrap.dedent('''\
    """Run capacityd with a forecast pass every 3 s and a worker deadline of 10 s (instead of 15 and 30 minutes)."""
    import os
    import sys
    from datetime import timedelta

    sys.path.insert(0, os.getcwd())
    from collector.app import daemon, worker

    daemon.FORECAST_INTERVAL = timedelta(seconds=3)
    worker.WORKER_DEADLINE = 10.0
    from collector.app.cli import main

    sys.exit(main(sys.argv[1:]))
    ''')


def test_a_worker_that_hangs_or_is_killed_is_a_visible_failure_and_the_next_pass_recovers(tmp_path, daemons):
    """The pass' worker hangs past its deadline, then is SIGKILLed mid-pass (the OOM killer's way): each time the
    daemon lives on, the expensive analyses fail with the reason and keep their last good frames (stale); the
    next good pass clears it."""
    port = free_port()
    mode = tmp_path / "mode"
    mode.write_text("run")
    env = analysis_plugin(tmp_path, "faulty_worker", FAULTY_WORKER_PLUGIN)
    env["CAPACITYD_TEST_MODE"] = str(mode)
    daemon = daemons(
        tmp_path, node5_config(port, tmp_path / "state"), port, env=env, python_prelude=FAST_PASSES_PRELUDE
    )
    daemon.wait_value(lambda v: v == 1, "capacityd_analysis_success", "a good pass", timeout=60, analysis="forecast")
    assert daemon.value("capacityd_analysis_worker_peak_resident_bytes") > 50 * 2**20
    assert daemon.value("capacityd_analysis_worker_duration_seconds") > 0

    passes = tmp_path / "passes"
    for fault, reason in (("hang", "no result within 10 s; killed"), ("die", "killed by SIGKILL (out of memory?")):
        mode.write_text(fault)
        if fault == "hang":  # while the worker hangs, polls and /metrics go on: nothing waits on the pass
            wait_for(lambda: " hang" in passes.read_text(), timeout=30, what="a worker hanging")
            polls = daemon.value("capacityd_source_polls_total", source="node5")
            taken = daemon.value("capacityd_snapshot_timestamp_seconds")
            daemon.wait_value(lambda v, p=polls: v >= p + 2, "capacityd_source_polls_total", "polls", source="node5")
            assert daemon.value("capacityd_snapshot_timestamp_seconds") > taken
            assert daemon.value("capacityd_analysis_success", analysis="forecast") == 1  # the hung pass not over
        for name in ("forecast", "reclaimable", "report_history"):  # the whole pass failed
            daemon.wait_value(lambda v: v == 0, "capacityd_analysis_success", f"{fault}: failed", analysis=name)
        text = daemon.metrics()
        assert sample(text, "capacityd_analysis_stale", analysis="forecast") == 1  # its last good frames served
        assert sample(text, "capacityd_analysis_success", analysis="headroom") == 1  # cheap ones go on
        assert sample(text, "capacityd_analysis_worker_peak_resident_bytes") == 0
        assert f"analysis worker: {reason}" in daemon.log_path.read_text()
        mode.write_text("run")
        daemon.wait_value(
            lambda v: v == 1, "capacityd_analysis_success", f"recovered from {fault}", analysis="forecast"
        )
        assert daemon.value("capacityd_analysis_stale", analysis="forecast") == 0

    passes = [line.split() for line in passes.read_text().splitlines()]
    assert {mode for _, mode in passes} == {"run", "hang", "die"}
    assert len({pid for pid, _ in passes}) == len(passes)  # a fresh process each pass
    assert all(_gone(int(pid)) for pid, _ in passes[:-1])  # none left behind (the hung one was killed)
    assert daemon.process.poll() is None


# -- clock -------------------------------------------------------------------------------------------------


def _timestamps(text: str) -> dict[str, float]:
    """Every exported `*_timestamp_seconds` sample, by its line's head."""
    out = {}
    for line in text.splitlines():
        head, _, value = line.rpartition(" ")
        if not line.startswith("#") and head.split("{")[0].endswith("_timestamp_seconds"):
            out[head] = float(value)
    return out


def test_wall_clock_steps_neither_stop_polling_nor_burst(tmp_path, daemons):
    """The wall clock of the daemon is stepped an hour back, then two hours forward; CLOCK_MONOTONIC is not."""
    if not LIBFAKETIME.exists() or not shutil.which("faketime"):  # a failure, not a skip: CI installs it
        pytest.fail("libfaketime not found: install the Debian package 'faketime' (scripts/provision/ops.sh)")
    interval = 2.0
    offset_file = tmp_path / "faketime"
    offset_file.write_text("+0\n")
    env = {
        "LD_PRELOAD": str(LIBFAKETIME),
        "FAKETIME_TIMESTAMP_FILE": str(offset_file),
        "FAKETIME_NO_CACHE": "1",
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",
    }
    port = free_port()
    daemon = daemons(tmp_path, node5_config(port, tmp_path / "state", interval="2s"), port, env=env)
    daemon.wait_value(lambda v: v >= 2, "capacityd_source_polls_total", "first polls", source="node5")

    def polls() -> float:
        return daemon.value("capacityd_source_polls_total", source="node5") or 0.0

    def watch(seconds: float, offset: float) -> None:
        """Over `seconds`: polls go on at the interval's pace (no pause, no burst), and nothing is stale
        or timestamped in the future of the daemon's (faked) wall clock by more than an interval."""
        before, started = polls(), time.monotonic()
        # the daemon notices a step within a second and re-renders: wait for that, then hold it to it
        wait_for(
            lambda: abs(daemon.value("capacityd_snapshot_timestamp_seconds") - time.time() - offset) < 5,
            timeout=5,
            what="the exposition to follow the stepped clock",
        )
        while time.monotonic() - started < seconds:
            text = daemon.metrics()
            daemon_now = time.time() + offset
            for head, stamp in _timestamps(text).items():
                assert stamp <= daemon_now + interval, f"{head} is {stamp - daemon_now:.0f}s in the future"
            assert sample(text, "capacityd_source_stale", source="node5") == 0
            assert sample(text, "capacityd_source_up", source="node5") == 1
            time.sleep(0.5)
        made = polls() - before
        expected = (time.monotonic() - started) / interval
        # a stop makes 0 (the old wall-clock scheduler: none for the hour), a burst many more; the slack
        # below is for a loaded CI machine delaying polls
        assert expected / 2 <= made <= expected + 2, (
            f"{made} polls in {seconds}s at a {interval}s interval; log:\n{daemon.log_path.read_text()[-2000:]}"
        )

    watch(6, 0)
    offset_file.write_text("-3600\n")  # an hour back
    watch(10, -3600)
    offset_file.write_text("+3600\n")  # two hours forward: an hour ahead of real time
    watch(10, 3600)
    offset_file.write_text("+0\n")
    watch(6, 0)
    log = daemon.log_path.read_text()
    assert "Traceback" not in log, log[-4000:]

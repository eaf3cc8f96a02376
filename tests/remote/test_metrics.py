"""The remote-history self-metrics on /metrics through the daemon's Pipeline (valid for promtool), and the
daemon choosing the backend from `history.backend`."""

from __future__ import annotations

import shutil
import subprocess
from datetime import timedelta
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from collector.app.config import Config
from collector.app.daemon import Pipeline, open_history
from collector.estate import Estate
from collector.store.history import History
from collector.store.remote.backend import RemoteHistory
from collector.store.settings import HistoryConfig, RemoteHistoryConfig
from exporters.prometheus.exposition import ExpositionCache, load_builtin_family_modules
from tests.history.frames import capacity_frame
from tests.remote.conftest import recent_t0
from tests.remote.receiver import receiver

PREFIX = "capacityd_remote_storage_"


def samples(body: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
    }


def remote_config(tmp_path: Path, url: str, **remote: object) -> Config:
    settings = {"write_url": url, "max_retries": 1, "min_backoff": timedelta(milliseconds=1), **remote}
    history = HistoryConfig(backend="remote", remote=RemoteHistoryConfig.model_validate(settings))
    return Config(state_dir=tmp_path / "state", history=history)


def test_the_daemon_opens_the_backend_the_config_names(tmp_path: Path) -> None:
    embedded = open_history(Config(state_dir=tmp_path / "a"))
    assert isinstance(embedded, History)
    embedded.close()
    with receiver() as r:
        remote = open_history(remote_config(tmp_path, r.url))
        assert isinstance(remote, RemoteHistory)
        remote.close()


def test_remote_storage_families_reach_metrics(tmp_path: Path) -> None:
    load_builtin_family_modules()
    t0 = recent_t0()
    with receiver() as r:
        config = remote_config(tmp_path, r.url, queue_samples=20)
        history = open_history(config)
        assert isinstance(history, RemoteHistory)
        cache = ExpositionCache()
        pipeline = Pipeline(config, Estate(), history, cache)
        frame = capacity_frame(t0, hosts_per_pool=2, resources=("cpu",))  # 10 samples per poll
        assert history.append("kvm", {"capacity": frame}, t0)
        r.script.extend([500, 500, 500, 400])
        history.append("kvm", {"capacity": frame}, t0 + timedelta(minutes=5))  # 500, retried 500: queued
        history.append("kvm", {"capacity": frame}, t0 + timedelta(minutes=10))  # one probe, 500: both queued
        history.append("kvm", {"capacity": frame}, t0 + timedelta(minutes=15))  # 400 (oldest), then 2 sent
        pipeline.refresh()
        body = cache.current.body
        got = samples(body)
        history.close()
    assert got[(PREFIX + "samples_total", ())] == 30  # first poll + the two after the refused one
    assert got[(PREFIX + "failed_samples_total", ())] == 10  # the second poll, refused at its third attempt
    # Every sample is in exactly one place: sent, refused, dropped or queued.
    assert (
        sum(
            got[(PREFIX + n, ())]
            for n in ("samples_total", "failed_samples_total", "dropped_samples_total", "queue_length")
        )
        == 4 * 10
    )
    assert got[(PREFIX + "retried_samples_total", ())] == 10
    assert got[(PREFIX + "dropped_samples_total", ())] == 0
    assert got[(PREFIX + "queue_length", ())] == 0
    assert got[(PREFIX + "queue_capacity", ())] == 20
    assert got[(PREFIX + "requests_total", ())] == 1 + 2 + 1 + 3
    assert got[(PREFIX + "failed_requests_total", ())] == 4
    assert got[(PREFIX + "sent_batch_duration_seconds_count", ())] == 7
    assert got[(PREFIX + "sent_batch_duration_seconds_bucket", (("le", "+Inf"),))] == 7
    assert (PREFIX + "last_send_success_timestamp_seconds", ()) in got
    assert got[("capacityd_history_dropped_samples_total", ())] == 0  # the local store's families stay
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool not found: install the Debian package 'prometheus'")
    result = subprocess.run([promtool, "check", "metrics"], input=body, capture_output=True, check=False)
    assert result.returncode == 0, result.stderr.decode() + result.stdout.decode()


def test_embedded_backend_has_no_remote_families(tmp_path: Path) -> None:
    load_builtin_family_modules()
    config = Config(state_dir=tmp_path / "state")
    history = open_history(config)
    cache = ExpositionCache()
    Pipeline(config, Estate(), history, cache).refresh()
    assert not [key for key in samples(cache.current.body) if key[0].startswith(PREFIX)]
    history.close()

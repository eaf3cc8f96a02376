"""Hostile config files: never a traceback, bounded work, the key path named, secrets never echoed.

A corpus of the files that used to crash `check-config`, `run` or a reload (issue 12), checked through the
real CLI, plus a hypothesis fuzz over YAML structure and bytes: `load_config` either returns a Config or
raises ConfigError, and nothing else, whatever the file holds.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from collector.app.config import MAX_CONFIG_BYTES, load_config
from collector.contract.settings import ConfigError

SOURCE = '  - {kind: libvirt, name: a, uri: "test:///default", %s}\n'
DEEP = "a: " + "[" * 5000 + "]" * 5000 + "\n"
LAUGHS = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{n}: &{n} [{', '.join([f'*{p}'] * 9)}]\n" for p, n in zip("abcdefg", "bcdefgh", strict=False)
)

# (file content, a fragment every error line must contain)
CORPUS: dict[str, tuple[bytes, str]] = {
    "huge_duration": (("sources:\n" + SOURCE % "interval: 99999999999w").encode(), "sources[0].interval: "),
    "days_beyond_scheduler": (("sources:\n" + SOURCE % "interval: 100000000d").encode(), "sources[0].interval: "),
    "interval_over_a_day": (("sources:\n" + SOURCE % "interval: 2d").encode(), "sources[0].interval: "),
    "sub_millisecond": (("sources:\n" + SOURCE % "interval: 0.0000001ms").encode(), "sources[0].interval: "),
    "timeout_huge": (("sources:\n" + SOURCE % "timeout: 99999999999w").encode(), "sources[0].timeout: "),
    "jitter_beyond_interval": (("sources:\n" + SOURCE % "interval: 10s, jitter: 1h").encode(), "sources[0]: "),
    "inf": (("sources:\n" + SOURCE % "interval: .inf").encode(), "sources[0].interval: "),
    "nan": (("sources:\n" + SOURCE % "interval: .nan").encode(), "sources[0].interval: "),
    "float_1e300": (("sources:\n" + SOURCE % "interval: 1.0e+300").encode(), "sources[0].interval: "),
    "retention_1e300": (b"history: {retention: 1.0e+300}\n", "history.retention: "),
    "non_utf8": (b'listen: "\xff\xfe127.0.0.1:9847"\n', "line 1: not UTF-8"),
    "deep_nesting": (DEEP.encode(), "nested deeper than"),
    "digits_5000": (("history: {retention: " + "9" * 5000 + "}\n").encode(), "digits"),
    "billion_laughs": (LAUGHS.encode(), "aliases are expanded"),
    "recursive_alias": (b"a: &a [1, *a]\nsources: &s [{kind: libvirt, name: a, uri: *s}]\n", "aliases are expanded"),
    "port_5000_digits": (("listen: 127.0.0.1:" + "9" * 5000 + "\n").encode(), "listen: "),
    "not_a_mapping": (b"- a\n- b\n", "(top level)"),
    "binary": (bytes(range(256)) * 4, "not UTF-8"),
}


def run_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "collector.app.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ},
    )


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_hostile_file_is_a_config_error_naming_the_key(tmp_path, name):
    content, fragment = CORPUS[name]
    path = tmp_path / f"{name}.yaml"
    path.write_bytes(content)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert caught.value.errors
    assert any(fragment in line for line in caught.value.errors), caught.value.errors


def test_check_config_answers_the_corpus_without_a_traceback(tmp_path):
    for name, (content, fragment) in CORPUS.items():
        path = tmp_path / f"{name}.yaml"
        path.write_bytes(content)
        done = run_cli("check-config", str(path))
        assert done.returncode == 1, (name, done.stdout, done.stderr)
        assert "Traceback" not in done.stderr and "Error:" not in done.stderr.split("\n")[-2], (name, done.stderr)
        assert fragment in done.stderr, (name, done.stderr)


def test_run_refuses_a_hostile_file_with_exit_1_and_no_traceback(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_bytes(CORPUS["days_beyond_scheduler"][0])
    done = run_cli("run", "-c", str(path))
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "sources[0].interval: " in done.stderr and "too long" in done.stderr


def test_a_10_mb_file_is_refused_quickly(tmp_path):
    path = tmp_path / "big.yaml"
    line = '  - {kind: libvirt, name: n%07d, uri: "test:///default"}\n'
    with path.open("w") as handle:
        handle.write("sources:\n")
        for index in range(10 * 2**20 // len(line % 0) + 1):
            handle.write(line % index)
    assert path.stat().st_size >= 10 * 2**20
    started = time.monotonic()
    done = run_cli("check-config", str(path))
    took = time.monotonic() - started
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert f"larger than {MAX_CONFIG_BYTES // 1024} KiB" in done.stderr
    assert took < 5, f"check-config took {took:.1f}s on a 10 MB file"


SECRET = "hunter2-secret"


@pytest.mark.parametrize(
    "text",
    [
        # a secret in a secret-named field of the wrong type
        f"smtp: {{host: mail, port: 25, from: a@b.c, password: [{SECRET}]}}\n",
        f"smtp: {{host: mail, port: 25, from: a@b.c, password: {{x: {SECRET}}}}}\n",
        # a secret pasted where a duration belongs
        "sources:\n" + SOURCE % f"interval: {SECRET}",
        f"history: {{retention: {SECRET}}}\n",
        # a secret in a key name is not a value, but a secret-named key's mapping is redacted whole
        f"sources:\n  - {{kind: openstack, name: a, password: {SECRET}, auth: 3}}\n",
    ],
)
def test_errors_never_echo_a_secret(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    joined = "\n".join(caught.value.errors)
    assert SECRET not in joined and "hunter2" not in joined, joined
    done = run_cli("check-config", str(path))
    assert done.returncode == 1 and SECRET not in done.stderr + done.stdout


# -- fuzz ----------------------------------------------------------------------------------------------

KEYS = [
    "listen",
    "state_dir",
    "sources",
    "history",
    "kind",
    "name",
    "uri",
    "interval",
    "timeout",
    "jitter",
    "retention",
    "password",
    "token",
    "smtp",
    "host",
    "port",
    "reports",
    "shapes",
    "headroom",
    "forecast",
    "libvirt",
    "openstack",
    "kubernetes",
    "log_level",
    "auth",
    "cpu",
    "memory",
]
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.sampled_from(
        [
            "1.0e+300",
            ".inf",
            "-.inf",
            ".nan",
            "99999999999w",
            "100000000d",
            "0.0000001ms",
            "5m",
            "test:///default",
            "libvirt",
            "openstack",
            "kubernetes",
            "127.0.0.1:9847",
            "9" * 80,
        ]
    ),
)
TREES = st.recursive(
    SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(st.sampled_from(KEYS), children, max_size=5)
    ),
    max_leaves=30,
)


def _load_text(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "fuzz.yaml"
    path.write_bytes(content)
    try:
        load_config(path)
    except ConfigError as error:
        assert error.errors and all(isinstance(line, str) and line for line in error.errors)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(tree=st.dictionaries(st.sampled_from(KEYS), TREES, max_size=6))
def test_fuzzed_structure_is_a_config_or_a_config_error(tmp_path, tree):
    _load_text(tmp_path, yaml.safe_dump(tree, allow_unicode=True).encode())


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(tree=st.dictionaries(st.sampled_from(KEYS), TREES, max_size=6), data=st.data())
def test_fuzzed_bytes_are_a_config_or_a_config_error(tmp_path, tree, data):
    content = bytearray(yaml.safe_dump(tree).encode())
    for _ in range(data.draw(st.integers(0, 4))):
        position = data.draw(st.integers(0, len(content)))
        content[position:position] = data.draw(st.binary(min_size=1, max_size=4))
    _load_text(tmp_path, bytes(content))


TOKENS = [
    "&a ",
    "&b ",
    "*a",
    "*b",
    "[",
    "]",
    "{",
    "}",
    ", ",
    ": ",
    "- ",
    "\n",
    "\n  ",
    "\n    ",
    "sources",
    "kind",
    "libvirt",
    "name",
    "uri",
    "interval",
    "5m",
    ".inf",
    "1.0e+300",
    "9" * 60,
    "'x'",
    '"\\xff"',
    "!!str ",
    "!!python/object:os.system ",
    "<<: *a",
    "? ",
    "|\n  ",
    "---\n",
    "...\n",
    "%YAML 1.1\n",
    "\t",
    "#c\n",
]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(tokens=st.lists(st.sampled_from(TOKENS), max_size=60))
def test_fuzzed_yaml_syntax_with_anchors_and_tags_is_a_config_or_a_config_error(tmp_path, tokens):
    _load_text(tmp_path, "".join(tokens).encode())

"""deploy/Containerfile is not built here (no registry for base images): check it is right by construction."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CONTAINERFILE = REPO / "deploy" / "Containerfile"


def _instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", CONTAINERFILE.read_text())
    return [
        (line.split()[0].upper(), line.split(None, 1)[1])
        for line in text.splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]


def test_runs_as_a_fixed_non_root_user_in_the_final_stage() -> None:
    steps = _instructions()
    final = max(i for i, (op, _) in enumerate(steps) if op == "FROM")
    users = [arg for op, arg in steps[final:] if op == "USER"]
    assert users and users[-1].split(":")[0].isdigit() and int(users[-1].split(":")[0]) >= 1000
    assert any("useradd" in arg and "10001" in arg for op, arg in steps[final:] if op == "RUN")


def test_copied_sources_exist_and_the_entrypoint_is_the_console_script() -> None:
    steps = _instructions()
    for op, arg in steps:
        if op == "COPY" and not arg.startswith("--from"):
            for source in arg.split()[:-1]:
                assert (REPO / source).exists(), f"COPY {source}: not in the repository"
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    entrypoint = next(arg for op, arg in steps if op == "ENTRYPOINT")
    assert '"capacityd"' in entrypoint and "capacityd" in scripts
    cmd = next(arg for op, arg in steps if op == "CMD")
    assert '"run"' in cmd and "/etc/capacityd/capacityd.yaml" in cmd


def test_bases_are_python_slim_and_the_runtime_has_libvirts_client_library() -> None:
    steps = _instructions()
    bases = [arg.split()[0] for op, arg in steps if op == "FROM"]
    assert bases and all(re.search(r"python:3\.1[1-9]-slim", base) for base in bases)
    final = max(i for i, (op, _) in enumerate(steps) if op == "FROM")
    runtime_runs = " ".join(arg for op, arg in steps[final:] if op == "RUN")
    assert "libvirt0" in runtime_runs and "libvirt-dev" not in runtime_runs and "build-essential" not in runtime_runs
    assert "9847" in next(arg for op, arg in steps if op == "EXPOSE")

"""`capacityd report` on a real source: one collection of a libvirt test:/// hypervisor, the HTML
file written, then `--send` through the test relay — recorded, so a second `--send` refuses.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from collector.app.cli import main
from tests.report.chromium import probe_images
from tests.report.conftest import PASSWORD_ENV, USER


def _config(tmp_path: Path, smtp_server, certificate) -> Path:
    config = {
        "state_dir": str(tmp_path / "state"),
        "sources": [{"kind": "libvirt", "name": "kvm-test", "uri": "test:///default", "cloud": "lab", "pool": "rack1"}],
        "smtp": {
            "host": "127.0.0.1",
            "port": smtp_server.port,
            "security": "starttls",
            "username": USER,
            "password_env": PASSWORD_ENV,
            "from": "capacityd@example.org",
            "ca_file": str(certificate.cert),
            "attempts": 1,
        },
        "reports": [{"name": "lab", "recipients": ["lab@example.org"], "accuracy_backtest": False}],
    }
    path = tmp_path / "capacityd.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_report_command_writes_html_and_sends_once(tmp_path, smtp_server, certificate, capsys):
    path = _config(tmp_path, smtp_server, certificate)
    out = tmp_path / "out" / "report.html"
    assert main(["report", "-c", str(path), "--out", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    html = out.read_text(encoding="utf-8")
    assert "rack1" in html and "No history yet" in html
    assert list(out.parent.glob("capacity-lab-*-pools.csv"))
    probe = probe_images(out)
    assert not probe.broken, probe
    assert smtp_server.handler.messages == []

    assert main(["report", "-c", str(path), "--out", str(out), "--send"]) == 0
    assert "sent report lab" in capsys.readouterr().out
    assert len(smtp_server.handler.messages) == 1
    assert main(["report", "-c", str(path), "--out", str(out), "--send"]) == 0
    assert "already sent" in capsys.readouterr().err
    assert len(smtp_server.handler.messages) == 1
    assert main(["report", "-c", str(path), "--out", str(out), "--send", "--force"]) == 0
    assert len(smtp_server.handler.messages) == 2


def test_report_command_errors(tmp_path, smtp_server, certificate, capsys, monkeypatch):
    path = _config(tmp_path, smtp_server, certificate)
    assert main(["report", "-c", str(path), "--name", "nope"]) == 1
    assert "no report named 'nope'" in capsys.readouterr().err
    monkeypatch.setenv(PASSWORD_ENV, "wrong")
    assert main(["report", "-c", str(path), "--out", str(tmp_path / "r.html"), "--send"]) == 2
    assert "authentication failed" in capsys.readouterr().err
    broken = tmp_path / "broken.yaml"
    broken.write_text("reports: [{name: x, recipients: [a@b.c]}]\n")
    assert main(["report", "-c", str(broken)]) == 1
    assert "no smtp section" in capsys.readouterr().err

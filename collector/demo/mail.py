"""Demo part: a loopback SMTP sink, so the demo's weekly report is really mailed.

An aiosmtpd server on 127.0.0.1 accepts every message and writes it as an .eml file under
`<workdir>/mail/`; the part configures `smtp:` and one weekly report through it. The demo then
sends the current period's report once forecasts are in, through the same delivery code as
production (`exporters.report.service.send_report`), so the report self-metrics carry real values.
"""

from __future__ import annotations

import itertools
import logging
import socket
from pathlib import Path
from typing import Any

from collector.demo import DemoPart

RECIPIENT = "capacity-planning@demo.invalid"
SENDER = "capacityd-demo@localhost"


class MaildirSink:
    """aiosmtpd handler writing each message to its own file (never relays anything)."""

    def __init__(self, folder: Path):
        self.folder = folder
        self._numbers = itertools.count(1)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        path = self.folder / f"{next(self._numbers):04d}.eml"
        path.write_bytes(envelope.original_content or envelope.content)
        return "250 Message accepted for delivery"


def start(workdir: Path, context: dict[str, Any]) -> DemoPart:
    from aiosmtpd.controller import Controller

    logging.getLogger("mail.log").setLevel(logging.WARNING)  # aiosmtpd logs every SMTP command at INFO

    folder = workdir / "mail"
    folder.mkdir(parents=True, exist_ok=True)
    with socket.socket() as probe:  # aiosmtpd's readiness check needs the real port up front
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    controller = Controller(MaildirSink(folder), hostname="127.0.0.1", port=port)
    controller.start()
    context["mail_folder"] = folder
    return DemoPart(
        sources=[],
        stop=controller.stop,
        description=f"SMTP sink on 127.0.0.1:{port} writing to {folder}",
        extra_config={
            "smtp": {"host": "127.0.0.1", "port": port, "security": "none", "from": SENDER, "attempts": 2},
            "reports": [
                {
                    "name": "weekly-demo",
                    "recipients": [RECIPIENT],
                    "schedule": "0 7 * * 1",
                    "title": "Weekly capacity report — demo estate",
                }
            ],
        },
    )

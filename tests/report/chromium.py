"""Headless Chromium for the report tests: open an HTML file, report which images loaded, screenshot.

Chromium comes from Debian's `chromium` package (scripts/provision/chromium.sh). The flags are the
ones CI uses; every run gets a fresh --user-data-dir so runs never share state.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--hide-scrollbars",
    "--disable-extensions",
    "--mute-audio",
]

# Injected into a *copy* of the report for the check only (the report itself has no scripts): after
# load, it writes one line per image — complete, natural size — into the DOM that --dump-dom prints.
PROBE = """<script>
window.addEventListener('load', function () {
  var out = document.createElement('pre');
  out.id = 'capacityd-image-probe';
  var lines = [];
  var images = document.images;
  for (var i = 0; i < images.length; i++) {
    var img = images[i];
    lines.push('IMG ' + (img.complete && img.naturalWidth > 0 ? 'loaded' : 'broken') + ' ' +
               img.naturalWidth + 'x' + img.naturalHeight + ' ' + img.getAttribute('src').slice(0, 40));
  }
  lines.push('IMAGES ' + images.length);
  out.textContent = lines.join('\\n');
  document.body.appendChild(out);
});
</script>"""


def chromium_binary() -> str:
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    raise RuntimeError("chromium is not installed: run scripts/provision/chromium.sh (Debian package 'chromium')")


@dataclass
class ImageProbe:
    total: int
    loaded: list[str]
    broken: list[str]


def _run(args: list[str], timeout: float = 90) -> subprocess.CompletedProcess[str]:
    with tempfile.TemporaryDirectory(prefix="capacityd-chromium-") as profile:
        return subprocess.run(
            [chromium_binary(), *FLAGS, f"--user-data-dir={profile}", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )


def probe_images(html_path: Path) -> ImageProbe:
    """Load the HTML in headless Chromium and list which images decoded (naturalWidth > 0)."""
    html = html_path.read_text(encoding="utf-8")
    probed = html_path.with_name(html_path.stem + ".probe.html")
    probed.write_text(html.replace("</body>", PROBE + "</body>"), encoding="utf-8")
    result = _run(
        ["--virtual-time-budget=10000", "--run-all-compositor-stages-before-draw", "--dump-dom", probed.as_uri()]
    )
    match = re.search(r'<pre id="capacityd-image-probe">(.*?)</pre>', result.stdout, re.S)
    if not match:
        raise AssertionError(f"chromium did not run the probe (rc={result.returncode}): {result.stderr[-2000:]}")
    lines = match.group(1).splitlines()
    total = int(lines[-1].split()[1])
    return ImageProbe(
        total=total,
        loaded=[line for line in lines if line.startswith("IMG loaded")],
        broken=[line for line in lines if line.startswith("IMG broken")],
    )


def screenshot(html_path: Path, png_path: Path, *, width: int = 900, height: int = 3000) -> Path:
    result = _run(
        [
            f"--window-size={width},{height}",
            "--virtual-time-budget=10000",
            f"--screenshot={png_path}",
            html_path.as_uri(),
        ]
    )
    if not png_path.exists():
        raise AssertionError(f"chromium wrote no screenshot (rc={result.returncode}): {result.stderr[-2000:]}")
    return png_path

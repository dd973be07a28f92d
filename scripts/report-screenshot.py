"""`make report-png`: docs/report.png, the top of the demo's report as Debian's chromium shows it.

Runs `abaco demo` into a temporary tree (its own private PostgreSQL, 20,000 synthetic loans,
every export as of 2025-12-31, then the report), opens the report from disk in /usr/bin/chromium
through Playwright (never a browser of Playwright's own) and saves the first screen of it.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

from playwright.sync_api import sync_playwright

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TARGET = Path(__file__).resolve().parent.parent / "docs" / "report.png"


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="abaco-report-") as folder:
        tree = Path(folder) / "abaco_runtime"
        done = subprocess.run(
            [sys.executable, "-m", "abaco_cli", "demo", "--runtime-dir", str(tree)],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            sys.stderr.write(done.stderr)
            return done.returncode
        report = Path(done.stdout.strip().splitlines()[-1])
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            page = browser.new_page(viewport={"width": 1280, "height": 2000})
            page.goto(report.as_uri(), wait_until="load")
            page.wait_for_function(
                "document.querySelectorAll('.chart:not([data-rendered=interactive])').length == 0"
            )
            page.screenshot(path=str(TARGET))
            browser.close()
    print(TARGET)
    return 0


if __name__ == "__main__":
    sys.exit(main())

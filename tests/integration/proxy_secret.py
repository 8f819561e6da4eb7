"""The check every strict-mode test makes: the proxy's per-run secret is in the agent's environment only."""

from __future__ import annotations

import os
import re
from pathlib import Path

PROXY_URL = re.compile(rb"127\.0\.0\.1:[0-9]+/[A-Za-z0-9_-]{32}/")  # the proxy's URL with the run's secret


def assert_no_proxy_secret(*texts: str) -> None:
    """Not in the report, the log, the spool, the ledger (every file under CAPGUARD_HOME), nor in `texts`."""
    home = Path(os.environ["CAPGUARD_HOME"])
    for path in [p for p in home.rglob("*") if p.is_file()]:
        assert not PROXY_URL.search(path.read_bytes()), path
    for text in texts:
        assert not PROXY_URL.search(text.encode())

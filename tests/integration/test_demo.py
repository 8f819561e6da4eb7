"""`capguard demo`, as a new user runs it: the real aider, a local fake model, a cap that fires."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.agent


def test_demo_shows_a_cap_firing(aider_bin, tmp_path):
    env = {
        **os.environ,
        "PATH": os.pathsep.join([str(Path(aider_bin).parent), os.environ["PATH"]]),
        "HOME": str(tmp_path),
    }
    done = subprocess.run(
        [sys.executable, "-m", "capguard", "demo"], env=env, capture_output=True, text=True, timeout=240
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert re.search(r"capguard: stopped aider: cost \$0\.44 reached the \$0\.40 cap \(3 replies", done.stderr)
    assert "The cap fired as it should." in done.stderr
    # the demo's fake spend is kept out of the user's ledger
    assert not (Path(os.environ["CAPGUARD_HOME"]) / "ledger.db").exists()
    # a stop capguard made ends with capguard's verdict, not with aider's KeyboardInterrupt traceback above it
    assert "Traceback" not in done.stderr and "KeyboardInterrupt" not in done.stderr

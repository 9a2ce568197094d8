"""Running the real `cbstop` console script, as an operator would."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.support import TEST_KEY_SECRET

CBSTOP = str(Path(sys.executable).parent / "cbstop")


def cbstop_env(**over: str) -> dict[str, str]:
    """The environment of a `cbstop` process: the test key secret, no database from outside."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CBSTOP_")}
    env["CBSTOP_KEY_SECRET"] = TEST_KEY_SECRET
    env["COLUMNS"] = "100"
    env.update(over)
    return env


def cbstop(*args: str, cwd: Path | None = None, **env: str) -> subprocess.CompletedProcess[str]:
    """Run `cbstop ARGS...` to completion and capture its output."""
    return subprocess.run(
        [CBSTOP, *args],
        capture_output=True,
        text=True,
        env=cbstop_env(**env),
        cwd=cwd,
        timeout=120,
        check=False,
    )


def start_cbstop(*args: str) -> subprocess.Popen[str]:
    """Start `cbstop ARGS...` without waiting for it."""
    return subprocess.Popen(
        [CBSTOP, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cbstop_env(),
    )

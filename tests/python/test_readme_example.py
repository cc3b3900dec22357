"""README's example (python/examples/hello.py) runs and prints both messages."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HELLO = Path(__file__).resolve().parents[2] / "python" / "examples" / "hello.py"


def test_readme_example_runs() -> None:
    out = subprocess.run([sys.executable, str(HELLO)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "bob got b'hello' from" in out.stdout
    assert "alice got b'hi alice'" in out.stdout

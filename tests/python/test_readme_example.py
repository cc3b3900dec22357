"""README's example runs as README shows it: the code block is read from README.md itself (not from a
copy), run in a fresh interpreter, and must print both messages. python/examples/hello.py, which
README says "runs this", must hold the same code."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
HELLO = ROOT / "python" / "examples" / "hello.py"
INTRO = "`python python/examples/hello.py` runs this"


def readme_example() -> str:
    """The first ```python block after README's sentence that introduces the example."""
    text = README.read_text(encoding="utf-8")
    start = text.find(INTRO)
    assert start >= 0, f"README.md no longer says {INTRO!r}: update this test with it"
    block = re.search(r"^```python\n(.*?)^```$", text[start:], re.MULTILINE | re.DOTALL)
    assert block is not None, "no ```python block after the example's introduction"
    return block.group(1)


def test_readme_example_runs(tmp_path: Path) -> None:
    script = tmp_path / "readme_example.py"
    script.write_text(readme_example(), encoding="utf-8")
    out = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=60, cwd=tmp_path, check=False
    )
    assert out.returncode == 0, out.stderr
    assert "bob got b'hello' from" in out.stdout and "agntcy/ns/alice" in out.stdout, out.stdout
    assert "alice got b'hi alice'" in out.stdout, out.stdout


def test_hello_py_is_readme_example() -> None:
    hello = HELLO.read_text(encoding="utf-8")
    # hello.py starts with a docstring; the rest is README's block, character for character.
    body = re.sub(r'\A""".*?"""\n\n', "", hello, count=1, flags=re.DOTALL)
    assert body == readme_example(), "python/examples/hello.py and README's example differ"

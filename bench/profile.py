"""Sampling a worker subprocess with py-spy (`pip install py-spy` into the venv; not a project
dependency) and summarising the collapsed stacks: where a worker's CPU goes, by function."""

from __future__ import annotations

import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

_LINE = re.compile(r"\s*\(([^()]*?)(?::\d+)?\)\s*$")


def py_spy() -> Path | None:
    exe = Path(sys.executable).parent / "py-spy"
    return exe if exe.exists() else None


def start(pid: int, seconds: int, out: Path, rate: int = 67) -> subprocess.Popen[bytes] | None:
    exe = py_spy()
    if exe is None:
        return None
    argv = [str(exe), "record", "--pid", str(pid), "--duration", str(seconds), "--rate", str(rate)]
    argv += ["--format", "raw", "--output", str(out), "--nonblocking"]
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _frame(raw: str) -> str:
    """`fn (path/to/file.py:123)` -> `fn (file.py)`: functions, not lines."""
    m = _LINE.search(raw)
    if not m:
        return raw.strip()
    name = raw[: m.start()].strip()
    path = m.group(1)
    short = (
        "/".join(Path(path).parts[-2:]) if "site-packages" in path or "python3" in path else Path(path).name
    )
    return f"{name} ({short})"


def summarize(path: Path, top: int = 25) -> str:
    """Inclusive and self shares of the samples, by function."""
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [_frame(f) for f in stack.split(";")]
        for f in set(frames):
            inclusive[f] += n
        own[frames[-1]] += n
    if not total:
        return "no samples"
    out = [f"{total} samples; inclusive share by function (top {top}):"]
    out += [f"  {v / total * 100:5.1f}%  {k}" for k, v in inclusive.most_common(top)]
    out.append(f"self share by function (top {top}):")
    out += [f"  {v / total * 100:5.1f}%  {k}" for k, v in own.most_common(top)]
    return "\n".join(out)

"""`python worker.py` with a heap reporter beside it: where a parked deploy's memory goes (issue 15).

`python -m bench.run --only parked --park-heap` runs this instead of `python worker.py`. It starts a
daemon thread that writes one JSON line a second to $BENCH_HEAP_FILE, then runs worker.py as `__main__`,
unchanged. Each line holds what separates the candidates for RSS that grows after the cache is full:

- `rss_kb`: the kernel's VmRSS, what the target is about; `anon_kb` / `file_kb` its anonymous and
  file-backed parts (RssAnon, RssFile: the shared libraries' pages are file-backed), and `unnamed_kb` the
  anonymous mappings that are not malloc's main heap (pymalloc's arenas, thread stacks, malloc's other
  arenas and large chunks), summed from /proc/self/smaps.
- `malloc_in_use` / `malloc_free` / `malloc_mmap` (glibc `mallinfo2`: uordblks, fordblks, hblkhd, summed
  over every arena, so over sdk-core's Rust threads too, which allocate through the system malloc): bytes
  handed out and not freed, bytes freed but kept in the heap, bytes in mmapped chunks. RSS growing while
  `malloc_in_use` stays flat is the allocator keeping freed memory (fragmentation), not a leak.
- `py_blocks`: `sys.getallocatedblocks()`, the Python objects' small blocks: flat means Python holds
  nothing more per parked deploy.
- `threads`: the process's threads (the activity pool grows on demand).

`kill -USR1 <worker>` also writes the 40 most numerous Python object types (gc.get_objects, about half a
second with a thousand parked) to $BENCH_HEAP_FILE.types, one JSON line each time: two of them, some
hundreds of deploys apart, say which objects a parked deploy leaves behind.

No tracemalloc: it would slow the worker several times over and change what is measured.
"""

from __future__ import annotations

import collections
import ctypes
import gc
import json
import os
import runpy
import signal
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


def _mallinfo() -> dict[str, int]:
    try:
        libc = ctypes.CDLL("libc.so.6")
        fn = libc.mallinfo2
    except (OSError, AttributeError):  # not glibc, or glibc < 2.33
        return {}
    fn.restype = _MallInfo2
    info = fn()
    return {"malloc_in_use": info.uordblks, "malloc_free": info.fordblks, "malloc_mmap": info.hblkhd}


def _status() -> dict[str, int]:
    out: dict[str, int] = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key == "VmRSS":
            out["rss_kb"] = int(rest.split()[0])
        elif key == "RssAnon":
            out["anon_kb"] = int(rest.split()[0])
        elif key == "RssFile":
            out["file_kb"] = int(rest.split()[0])
        elif key == "Threads":
            out["threads"] = int(rest.split()[0])
    return out


def _unnamed_kb() -> int:
    total, unnamed = 0, False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        head = line.split()
        if (
            head and "-" in head[0] and len(head) >= 5
        ):  # a mapping's first line: range perms offset dev inode [path]
            unnamed = len(head) == 5
        elif unnamed and head and head[0] == "Rss:":
            total += int(head[1])
    return total


def snapshot() -> dict[str, float]:
    return {
        "t": time.time(),
        **_status(),
        "unnamed_kb": _unnamed_kb(),
        **_mallinfo(),
        "py_blocks": sys.getallocatedblocks(),
    }


def _report(path: Path, every: float) -> None:
    while True:
        with path.open("a") as f:
            f.write(json.dumps(snapshot()) + "\n")
        time.sleep(every)


def last(path: Path) -> dict[str, float]:
    """The newest line the worker wrote (for the bench)."""
    lines = path.read_text().splitlines() if path.exists() else []
    return json.loads(lines[-1]) if lines else {}


def _types(path: Path) -> None:
    counts = collections.Counter(type(o).__qualname__ for o in gc.get_objects())
    with path.open("a") as f:
        f.write(
            json.dumps({"t": time.time(), "objects": sum(counts.values()), "top": counts.most_common(40)})
            + "\n"
        )


def main() -> None:
    path = Path(os.environ["BENCH_HEAP_FILE"])
    signal.signal(signal.SIGUSR1, lambda *_: _types(path.with_suffix(".types")))
    threading.Thread(target=_report, args=(path, 1.0), daemon=True, name="heap-report").start()
    sys.path.insert(0, str(ROOT))
    sys.argv = [str(ROOT / "worker.py")]
    runpy.run_path(str(ROOT / "worker.py"), run_name="__main__")


if __name__ == "__main__":
    main()

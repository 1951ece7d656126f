"""The top entries of a py-spy raw (collapsed stacks) profile: self time and inclusive time.

python bench/profile.py FILE [N]
"""

from __future__ import annotations

import re
import sys
from collections import Counter
from pathlib import Path

_LINE = re.compile(r":\d+\)$")


def top(path: Path, count: int = 15) -> list[str]:
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, samples = line.rpartition(" ")
        if not stack or not samples.isdigit():
            continue
        n = int(samples)
        total += n
        # Per function, not per line: py-spy names frames "name (file:line)".
        frames = [_LINE.sub(")", frame) for frame in stack.split(";")]
        own[frames[-1]] += n
        for frame in set(frames):
            inclusive[frame] += n
    if not total:
        return ["(no samples)"]
    # The event loop, the CLI and the worker's start frames are in every stack: skip them.
    skip = (
        "run_forever",
        "run_until_complete",
        "_run_once",
        "Handle._run",
        "<module>",
        "_run_code",
        "_run_module_as_main",
        "execute_from_commandline",
        "main (",
        "run (stream_app/runtime/worker.py",
        "_execute_task",
        "Fetcher._fetcher",
    )
    lines = [f"{total} samples; self time:"]
    lines += [f"  {n / total:6.1%}  {frame}" for frame, n in own.most_common(count)]
    lines.append("inclusive time:")
    shown = [
        (frame, n)
        for frame, n in inclusive.most_common(count * 3)
        if not any(word in frame for word in skip)
    ][:count]
    lines += [f"  {n / total:6.1%}  {frame}" for frame, n in shown]
    return lines


if __name__ == "__main__":
    print("\n".join(top(Path(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 15)))

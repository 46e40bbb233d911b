"""`make bench`: run every benchmark section, print its table, write bench/results/*.json.

Sections are modules of this package with ``async def run() -> dict`` and
``def report(results) -> list[str]``; pick some with ``python -m bench wrk``.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import platform
import sys
from datetime import UTC, datetime
from pathlib import Path

SECTIONS = ("wrk", "costs")
RESULTS = Path(__file__).with_name("results")


def main(argv: list[str]) -> int:
    wanted = argv or list(SECTIONS)
    unknown = set(wanted) - set(SECTIONS)
    if unknown:
        print(f"unknown section(s): {', '.join(sorted(unknown))}; choose from {', '.join(SECTIONS)}")
        return 2
    results: dict[str, object] = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"python": platform.python_version(), "cpus": __import__("os").cpu_count()},
    }
    for name in wanted:
        module = importlib.import_module(f"bench.{name}")
        print(f"== {name} ==", flush=True)
        section = asyncio.run(module.run())
        results.update(section)
        for line in module.report(section):
            print(line)
        print(flush=True)
    RESULTS.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    for path in (RESULTS / f"bench-{stamp}.json", RESULTS / "latest.json"):
        path.write_text(json.dumps(results, indent=2))
    print(f"Results written to {RESULTS / 'latest.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Two revisions side by side: ``python -m bench.ab REV_A REV_B`` (e.g. ``b18b801 HEAD``).

On this machine back-to-back ``make bench`` runs drift by more than a 10 % effect, so a
change's cost is measured by serving both revisions at once, each from a git worktree
on a database of its own with the same 200 registered accounts, and driving them with
wrk in alternation (the order swapped each round). It prints each round's chats per
second and B/A, and the mean and median ratios; ``bench/results/ab-*.json`` keeps them.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import wrk
from bench.common import BENCH_PG

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).with_name("results")

# Run with a revision's own code (its worktree first on PYTHONPATH): migrate, serve in a
# session of its own, register the accounts; print where it listens and who they are.
_SIDE = """
import asyncio, json, subprocess, sys
from pathlib import Path
from bench import wrk
from bench.common import free_port, server_env, wait_ready
from devops_agent.db import Database
from devops_agent.migrate import upgrade

async def main(url, workdir, workers):
    workdir = Path(workdir)
    db = Database(url)
    await upgrade(db)
    await db.dispose()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    cli = Path(sys.executable).with_name("devops-agent")
    with (workdir / "server.out").open("wb") as out:
        server = subprocess.Popen(
            [str(cli), "serve", "--port", str(port), "--workers", str(workers)],
            env=server_env(url, workdir / "logs", CLOUD="sandbox"), cwd=workdir,
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )
    await wait_ready(base, server, workdir / "server.out")
    accounts = await wrk._accounts(base, url)
    print(json.dumps({"base": base, "pid": server.pid, "accounts": [a.__dict__ for a in accounts]}))

asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
"""


def _worktree(rev: str, where: Path) -> Path:
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(where), rev], check=True)
    return where


def _database(backend: str, name: str, workdir: Path) -> tuple[str, int]:
    if backend == "sqlite":
        return f"sqlite:///{workdir / name}.db", 1
    database = f"devops_agent_ab_{name}_{uuid.uuid4().hex[:8]}"
    subprocess.run(["psql", BENCH_PG, "-qc", f'CREATE DATABASE "{database}"'], check=True)
    return BENCH_PG.rsplit("/", 1)[0] + f"/{database}", 2


def _serve(tree: Path, url: str, workers: int, workdir: Path) -> dict[str, Any]:
    workdir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PYTHONPATH=f"{tree / 'src'}{os.pathsep}{tree}")
    out = subprocess.run(
        [sys.executable, "-c", _SIDE, url, str(workdir), str(workers)],
        env=env,
        cwd=tree,
        capture_output=True,
        text=True,
    )
    if out.returncode:
        raise RuntimeError(f"{tree} could not be served:\n{out.stderr[-3000:]}")
    side: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return side


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ab", description=__doc__.splitlines()[0])
    parser.add_argument("rev_a")
    parser.add_argument("rev_b")
    parser.add_argument("--backend", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--path", choices=[s.name for s in wrk.SCENARIOS], default="chat_many")
    args = parser.parse_args(argv)
    wrk.SECONDS = args.seconds
    scenario = next(s for s in wrk.SCENARIOS if s.name == args.path)
    workdir = Path(tempfile.mkdtemp(prefix="bench-ab-"))
    sides: dict[str, dict[str, Any]] = {}
    trees: list[Path] = []
    databases: list[str] = []
    rates: dict[str, list[float]] = {"A": [], "B": []}
    try:
        for name, rev in (("A", args.rev_a), ("B", args.rev_b)):
            trees.append(_worktree(rev, workdir / f"tree-{name}"))
            url, workers = _database(args.backend, name, workdir)
            if args.backend == "postgresql":
                databases.append(url.rsplit("/", 1)[1])
            sides[name] = _serve(trees[-1], url, workers, workdir / f"run-{name}")
        for n in range(args.rounds):
            for name in ("A", "B") if n % 2 == 0 else ("B", "A"):
                accounts = [wrk.Account(**a) for a in sides[name]["accounts"]]
                rates[name].append(wrk._wrk(sides[name]["base"], scenario, accounts, workdir)["per_second"])
            a, b = rates["A"][-1], rates["B"][-1]
            print(f"round {n}: A {a:.0f}/s  B {b:.0f}/s  B/A {b / a:.3f}", flush=True)
    finally:
        for side in sides.values():
            os.killpg(side["pid"], signal.SIGTERM)
        time.sleep(2)
        for database in databases:
            subprocess.run(["psql", BENCH_PG, "-qc", f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'], check=False)
        for tree in trees:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], check=False)
    mean_a, mean_b = statistics.fmean(rates["A"]), statistics.fmean(rates["B"])
    median = statistics.median(b / a for a, b in zip(rates["A"], rates["B"], strict=True))
    print(
        f"{args.path} on {args.backend}: A {args.rev_a} {mean_a:.1f}/s, B {args.rev_b} {mean_b:.1f}/s; "
        f"B/A {mean_b / mean_a:.3f} (median of the rounds' ratios {median:.3f})"
    )
    RESULTS.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    summary = {
        "a": args.rev_a,
        "b": args.rev_b,
        "backend": args.backend,
        "path": args.path,
        "rates": rates,
        "ratio_of_means": round(mean_b / mean_a, 3),
        "median_ratio": round(median, 3),
    }
    (RESULTS / f"ab-{stamp}.json").write_text(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Command line: many seeds (``--seeds N --start S``) or one replay (``--seed N -v``).

A replay with ``-v`` prints the simulator's trace line for every event, each
followed by the DEBUG lines raftcore logged while stepping it.
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import os
import sys
import time

from tests.sim.invariants import REPLAY
from tests.sim.scenario import run_seed
from tests.sim.trace import Trace


def _run_quiet(seed: int) -> tuple[int, str | None]:
    try:
        run_seed(seed)
    except AssertionError as exc:
        return seed, str(exc)
    return seed, None


def replay(seed: int, verbose: bool) -> int:
    if verbose:
        logging.basicConfig(level=logging.DEBUG, format="%(name)s: %(message)s", stream=sys.stdout)
    trace = Trace(size=200, verbose=verbose)
    try:
        result = run_seed(seed, trace=trace)
    except AssertionError as exc:
        print(f"FAILED {exc}")
        return 1
    print(result)
    return 0


def run_many(start: int, count: int, jobs: int) -> int:
    began = time.monotonic()
    seeds = range(start, start + count)
    failures: list[tuple[int, str]] = []
    if jobs > 1:
        with multiprocessing.Pool(jobs) as pool:
            outcomes = list(pool.imap_unordered(_run_quiet, seeds, chunksize=4))
    else:
        outcomes = [_run_quiet(seed) for seed in seeds]
    failures = sorted((seed, text) for seed, text in outcomes if text is not None)
    for seed, text in failures:
        print(f"FAILED seed {seed}: {text.splitlines()[0]}")
    if failures:
        seed, text = failures[0]
        print(f"\nfirst failure in full:\n{text}\n")
        print("replay: " + REPLAY.format(seed=seed))
    elapsed = time.monotonic() - began
    print(f"seeds {start}..{start + count - 1} in {elapsed:.1f} s with {jobs} jobs")
    print(f"sim: {count - len(failures)} passed, {len(failures)} failed")
    return 1 if failures else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.sim.run", description=__doc__)
    parser.add_argument("--seed", type=int, help="replay this one seed")
    parser.add_argument("--seeds", type=int, default=100, help="how many seeds to run")
    parser.add_argument("--start", type=int, default=0, help="first seed")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="processes")
    parser.add_argument("-v", "--verbose", action="store_true", help="trace and raftcore DEBUG")
    args = parser.parse_args(argv)
    if args.seed is not None:
        return replay(args.seed, args.verbose)
    return run_many(args.start, args.seeds, args.jobs)


if __name__ == "__main__":
    sys.exit(main())

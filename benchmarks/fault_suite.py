"""Run the fault and bad-input suite (slow tests included) and collect its figures into one JSON file.

    python benchmarks/fault_suite.py            # → benchmarks/results/fault_suite.json

It runs the crash trials 10 times per scenario (20 for backfills); the test suite alone runs 4 (and 8).

Each test records its figures (trials, kill stages, faults injected, inputs tried, records lost) through
``tests.support.fault_report``; this script points that at the results file and adds the suite's outcome.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.support lives in the checkout

from tests.support.fault_report import REPORT_ENV  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SUITE = [
    "tests/test_crash_safety.py",
    "tests/test_service_faults.py",
    "tests/test_hostile_inputs.py",
    "tests/test_fuzz_filters.py",
    "tests/test_fuzz_loaders.py",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "fault_suite.json")
    args = parser.parse_args()
    args.out.unlink(missing_ok=True)
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "pytest", *SUITE, "-q", "-p", "no:cacheprovider", "-n", "0"],
        cwd=ROOT,
        check=False,
        env={**os.environ, REPORT_ENV: str(args.out), "RAGLINE_CRASH_TRIALS": "10"},
    )
    report = json.loads(args.out.read_text()) if args.out.exists() else {}
    report["suite"] = {"files": SUITE, "exit_code": done.returncode, "seconds": round(time.perf_counter() - start, 1)}
    args.out.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    print(json.dumps(report, indent=2, sort_keys=True))
    sys.exit(done.returncode)


if __name__ == "__main__":
    main()

"""Figures of the fault and bad-input suite (trials, faults injected, inputs tried, records lost).

Tests call ``record_figures``; when ``RAGLINE_FAULT_REPORT`` names a JSON file (``benchmarks/fault_suite.py`` sets
it), each section is merged into that file, otherwise nothing is written.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

REPORT_ENV = "RAGLINE_FAULT_REPORT"


def record_figures(section: str, figures: dict[str, Any]) -> None:
    """Merge ``figures`` under ``section`` into the report file, if one is configured."""
    target = os.environ.get(REPORT_ENV)
    if not target:
        return
    path = Path(target)
    report = json.loads(path.read_text()) if path.exists() else {}
    report[section] = figures
    path.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")

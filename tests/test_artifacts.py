"""Every artifact the flows publish renders readably: Markdown that parses into narrow tables and images (never a
data URI as text), and table artifacts narrow enough that no column falls off the right edge of the Prefect UI.

The flows run under the Prefect test harness on the sample corpus; each artifact is read back from the API and
rendered with markdown-it (the CommonMark parser with tables, as the UI renders Markdown).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from markdown_it import MarkdownIt

from tests.conftest import SAMPLE

MAX_COLUMNS = 8
"""Columns a table may have and still fit a 1,400 px window next to Prefect's side panel."""
MAX_CELL = 80
"""Characters a table artifact's cell may hold."""
MAX_UNBROKEN = 120
"""Longest run of text without a space the rendered Markdown may show (a data URI printed as text is ~25,000)."""


def rendered_problems(markdown: str) -> list[str]:
    """What would read badly once ``markdown`` is rendered."""
    html = MarkdownIt("commonmark").enable("table").render(markdown)
    problems = []
    images = re.findall(r'<img src="(data:image/png;base64,[^"]+)"', html)
    text = re.sub(r"<[^>]+>", " ", html)
    problems += [f"unbroken text of {len(w)} characters" for w in text.split() if len(w) > MAX_UNBROKEN]
    problems += ["a data URI outside an image"] if "data:image" in text else []
    for table in re.findall(r"<table>.*?</table>", html, flags=re.S):
        header = re.search(r"<tr>(.*?)</tr>", table, flags=re.S)
        columns = header.group(1).count("<th") if header else 0
        if columns > MAX_COLUMNS:
            problems.append(f"a table of {columns} columns")
    return problems + ([] if "data:image" not in markdown or images else ["an image that does not render"])


def table_problems(rows: list[dict[str, Any]]) -> list[str]:
    problems = []
    if rows and len(rows[0]) > MAX_COLUMNS:
        problems.append(f"{len(rows[0])} columns: {list(rows[0])}")
    if any(list(row) != list(rows[0]) for row in rows):
        problems.append("rows with different columns")
    problems += [f"a cell of {len(str(v))} characters" for row in rows for v in row.values() if len(str(v)) > MAX_CELL]
    return problems


def test_the_render_check_catches_what_reads_badly() -> None:
    wide = "| " + " | ".join(f"c{i}" for i in range(12)) + " |\n|" + "---|" * 12 + "\n"
    assert rendered_problems(wide) == ["a table of 12 columns"]
    assert "a data URI outside an image" in rendered_problems("data:image/png;base64," + "A" * 500)
    assert rendered_problems("![chart](data:image/png;base64,iVBORw0KGgo)\n\n| a | b |\n|---|---|\n| 1 | 2 |") == []
    assert table_problems([{f"c{i}": i for i in range(19)}]) == [f"19 columns: {[f'c{i}' for i in range(19)]}"]


def test_every_flow_artifact_renders_narrow(harness: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from prefect import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    from ragline.flows.backfill import backfill_flow
    from ragline.flows.evaluate import evaluate_flow
    from ragline.flows.ingest import ingest_flow
    from ragline.flows.refresh import refresh_flow

    monkeypatch.setenv("RAGLINE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("RAGLINE_EVAL_SAMPLE_PATH", str(SAMPLE))
    monkeypatch.setenv("RAGLINE_BACKFILL_PARTITION_SIZE", "20")
    states = [
        ingest_flow(str(SAMPLE), return_state=True),
        refresh_flow([str(SAMPLE)], ttl="0s", return_state=True),
        backfill_flow(str(SAMPLE / "guides"), namespace="backfilled", return_state=True),
        evaluate_flow(return_state=True),
        evaluate_flow(return_state=True),  # a second run: trends, arrows and the chart's line over runs
    ]
    flow_runs = [state.state_details.flow_run_id for state in states]
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=flow_runs))
        )
    keys = {a.key for a in artifacts}
    assert {
        "ingest-summary",
        "ingest-stages",
        "refresh-summary",
        "refresh-stats",
        "refresh-reconcile",
        "backfill-ledger",
        "backfill-summary",
        "evaluation-report",
        "evaluation-metrics",
        "evaluation-answers",
    } <= keys
    problems = {}
    for artifact in artifacts:
        if artifact.type == "markdown":
            found = rendered_problems(str(artifact.data))
        elif artifact.type == "table":
            found = table_problems(json.loads(str(artifact.data)))
        else:
            found = [] if artifact.type == "progress" else [f"an artifact of type {artifact.type}"]
        if found:
            problems[artifact.key] = found
    assert problems == {}

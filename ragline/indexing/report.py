"""Run summaries as rows and Markdown, shared by the CLI and the Prefect artifacts."""

from __future__ import annotations

from ragline.indexing.pipeline import IngestResult

_COUNTS = [
    ("documents_seen", "Documents seen"),
    ("documents_new", "Documents new"),
    ("documents_changed", "Documents changed"),
    ("documents_unchanged", "Documents unchanged"),
    ("documents_removed", "Documents removed"),
    ("documents_quarantined", "Documents quarantined"),
    ("documents_near_duplicate", "Documents near-duplicate"),
    ("chunks_written", "Chunks written"),
    ("chunks_deleted", "Chunks deleted"),
    ("embeddings_computed", "Embeddings computed"),
    ("embeddings_cached", "Embeddings from cache"),
    ("tokens_embedded", "Tokens billed by the embedder"),
    ("read_units", "Vector store read units"),
    ("write_units", "Vector store write units"),
]


_STAGE_ORDER = (
    "load",
    "plan",
    "reverify",
    "chunk",
    "dedupe",
    "cache",
    "embed",
    "validate",
    "record",
    "upsert",
    "verify",
    "commit",
    "bm25",
)
"""Stages in pipeline order (for reading timings top to bottom); others follow alphabetically."""

Row = dict[str, str | int | float]


def count_rows(result: IngestResult) -> list[Row]:
    """One row per count, and the estimated cost."""
    stats = result.stats
    rows: list[Row] = [{"metric": label, "value": getattr(stats, name)} for name, label in _COUNTS]
    rows.append({"metric": "Estimated cost (USD)", "value": round(stats.estimated_cost_usd, 6)})
    return rows


def stage_rows(result: IngestResult) -> list[Row]:
    """One row per stage, in pipeline order: seconds spent (summed over batches) and share of the total."""
    seconds = result.stats.seconds
    order = {stage: i for i, stage in enumerate(_STAGE_ORDER)}
    total = sum(seconds.values()) or 1.0
    stages = sorted(seconds, key=lambda s: (order.get(s, len(order)), s))
    return [{"stage": s, "seconds": round(seconds[s], 3), "share": f"{seconds[s] / total:.0%}"} for s in stages]


def summary_rows(result: IngestResult) -> list[Row]:
    """Every count, then one row per stage's seconds (the CLI's table)."""
    return count_rows(result) + [
        {"metric": f"Seconds: {r['stage']}", "value": r["seconds"]} for r in stage_rows(result)
    ]


def result_dict(result: IngestResult, max_quarantined: int = 20) -> dict[str, object]:
    """The run as JSON-ready values (a flow's result, what ``ragline ingest --flow`` prints): its id and namespace,
    every count and timing, and the first inputs it quarantined with why."""
    return {
        "run_id": result.run_id,
        "namespace": result.namespace,
        **result.stats.as_dict(),
        "quarantined": [{"uri": q.uri, "reason": q.reason} for q in result.quarantined[:max_quarantined]],
    }


def summary_markdown(result: IngestResult, max_quarantined: int = 20) -> str:
    """A Markdown report of the run: its counts and what was quarantined, with the reasons (timings are the
    ``stage_rows`` table)."""
    lines = [
        f"# Ingest run `{result.run_id}`",
        "",
        f"Source **{result.source}** into namespace **{result.namespace}**.",
        "",
        "| metric | value |",
        "|---|---|",
    ]
    lines += [f"| {row['metric']} | {row['value']} |" for row in count_rows(result)]
    if result.quarantined:
        lines += ["", f"## Quarantined ({len(result.quarantined)})", "", "| uri | reason |", "|---|---|"]
        lines += [
            f"| {markdown_cell(q.uri)} | {markdown_cell(q.reason)} |" for q in result.quarantined[:max_quarantined]
        ]
        if len(result.quarantined) > max_quarantined:
            lines.append(f"| … | {len(result.quarantined) - max_quarantined} more in the record store |")
    if result.near_duplicates:
        found = result.near_duplicates
        lines += [
            "",
            f"## Near-duplicates ({len(found)})",
            "",
            "| document | near-duplicate of | similarity | action |",
            "|---|---|---|---|",
        ]
        lines += [
            f"| {markdown_cell(n.doc_id)} | {markdown_cell(n.duplicate_of)} | {n.similarity:.3f} | {n.action} |"
            for n in found[:max_quarantined]
        ]
        if len(found) > max_quarantined:
            lines.append(f"| … | {len(found) - max_quarantined} more in the record store | | |")
    return "\n".join(lines) + "\n"


def markdown_cell(text: str) -> str:
    """Text safe inside a Markdown table cell."""
    return text.replace("|", "\\|").replace("\n", " ")

"""A refresh's counts as rows and Markdown, shared by the CLI and the Prefect artifacts."""

from __future__ import annotations

import time

from ragline.indexing.refresh import RefreshReport
from ragline.indexing.report import markdown_cell

Row = dict[str, str | int | float]


def format_ttl(seconds: float) -> str:
    """A TTL the way it is configured: ``1d``, ``6h``, ``90m``, ``45s``."""
    for unit, size in (("d", 86_400), ("h", 3_600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


def source_rows(report: RefreshReport) -> list[Row]:
    """One row per refreshed source: how its documents were classified and what the run wrote."""
    rows: list[Row] = []
    for s in report.sources:
        stats, fresh = s.stats, s.freshness
        rows.append(
            {
                "source": s.source,
                "namespace": s.target.namespace,
                "ttl": format_ttl(s.target.ttl_s),
                "run": s.run_id,
                "new": stats.documents_new,
                "changed": stats.documents_changed,
                "expired": fresh.documents_expired,
                "touched": fresh.documents_touched,
                "unchanged fresh": fresh.documents_fresh,
                "removed": stats.documents_removed,
                "quarantined": stats.documents_quarantined,
                "chunks re-verified": fresh.chunks_reverified,
                "chunks restored": fresh.chunks_restored,
                "embeddings computed": stats.embeddings_computed,
                "chunks written": stats.chunks_written,
                "chunks deleted": stats.chunks_deleted,
                "read units": stats.read_units,
                "write units": stats.write_units,
                "seconds": round(sum(stats.seconds.values()), 3),
            }
        )
    return rows


def source_count_rows(report: RefreshReport) -> list[Row]:
    """``source_rows`` one count per row (source, count, value): a table artifact that stays narrow."""
    return [
        {"source": str(row["source"]), "count": name, "value": value}
        for row in source_rows(report)
        for name, value in row.items()
        if name != "source"
    ]


def reconcile_rows(report: RefreshReport) -> list[Row]:
    """Two rows per namespace: what reconciliation found (and repaired) before its runs, and after them.

    ``differing`` counts the sampled chunks whose vector or metadata differed (see ``ragline.indexing.reconcile``)."""
    runs = [
        (when, r)
        for ns in report.namespaces
        for when, r in (("before", ns.reconciled_before), ("after", ns.reconciled_after))
    ]
    return [
        {
            "namespace": r.namespace,
            "when": when,
            "missing": len(r.missing),
            "differing": len(r.different),
            "orphans": len(r.orphans),
            "runs rolled back": len(r.runs_rolled_back),
            "repaired": r.repaired,
            "read units": r.read_units,
            "write units": r.write_units,
        }
        for when, r in runs
    ]


def transposed(rows: list[Row], key: str) -> tuple[list[str], list[list[str]]]:
    """``rows`` turned sideways for narrow displays: the header (``key``'s values) and one line per other field."""
    header = [str(row[key]) for row in rows]
    fields = [name for name in (rows[0] if rows else {}) if name != key]
    return header, [[name, *(str(row[name]) for row in rows)] for name in fields]


def refresh_markdown(report: RefreshReport, max_quarantined: int = 20) -> str:
    """A Markdown report: per-source counts, reconciliation repairs, and what was quarantined with the reasons."""
    header, body = transposed(source_rows(report), "source")
    lines = [f"# Refresh at {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime(report.now))}", ""]
    lines += _table(["", *header], body)
    repairs = reconcile_rows(report)
    if repairs:
        lines += ["", "## Reconciliation", ""]
        lines += _table(list(repairs[0]), [[str(v) for v in row.values()] for row in repairs])
    quarantined = [[s.source, q.uri, q.reason] for s in report.sources for q in s.quarantined]
    if quarantined:
        lines += ["", f"## Quarantined ({len(quarantined)})", ""]
        lines += _table(["source", "uri", "reason"], quarantined[:max_quarantined])
        if len(quarantined) > max_quarantined:
            lines.append(f"| … | | {len(quarantined) - max_quarantined} more in the record store |")
    return "\n".join(lines) + "\n"


def _table(header: list[str], body: list[list[str]]) -> list[str]:
    """Markdown table lines."""
    return [_line(header), "|" + "---|" * len(header)] + [_line(line) for line in body]


def _line(cells: list[str]) -> str:
    return f"| {' | '.join(markdown_cell(cell) for cell in cells)} |"

"""Evaluation history in the record store, trends against earlier runs, and the regression check.

One row per (run, dataset, mode): ``run_id``, ``timestamp`` (UTC), ``dataset``, ``namespace``, ``mode``, ``k``,
``good`` and one column per metric. Answer evaluations add rows of their own (``mode`` ``answers-<answerer>``,
answer metric columns; retrieval columns NaN there, and the other way round). A row is *good* when its mode passed
the regression check; the check compares a mode's nDCG@10 with its **last good** run on the same dataset and
namespace (the golden set run on another namespace, a subset say, is another baseline), so a failed night never
becomes the baseline. It fails when the drop is strictly more than ``tolerance`` (absolute, default 0.02).

The rows live in the record store's ``EvaluationLog``, so every host that runs the nightly evaluation checks
against the same baseline; ``<home>/evaluation/history.parquet`` is a copy written after each run, for analysis.
Before it is written, the rows of that file the log lacks are adopted: each host's history from before the log joins
it on the host's first run, and the copy never overwrites rows kept nowhere else (a file that cannot be read as a
history is moved aside to ``history.parquet.unreadable``, not replaced).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from ragline.evaluation.answers import AnswerReport
from ragline.evaluation.metrics import NDCG
from ragline.evaluation.runner import EvaluationReport
from ragline.recordstore.protocol import EvaluationLog
from ragline.recordstore.rows import EvaluationRow

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

DEFAULT_TOLERANCE = 0.02
_KEY_DTYPES = {
    "run_id": "str",
    "timestamp": "datetime64[us, UTC]",
    "dataset": "str",
    "namespace": "str",
    "mode": "str",
    "k": "int64",
    "good": "bool",
}
_EPSILON = 1e-9
"""Float slack, so a drop of exactly ``tolerance`` passes."""


def history_path(home: Path) -> Path:
    """Where a state directory keeps its Parquet copy of the history."""
    return Path(home) / "evaluation" / "history.parquet"


class EvaluationHistory:
    """The evaluation history of a record store, as a DataFrame (see the module docstring)."""

    def __init__(self, log: EvaluationLog) -> None:
        self.log = log

    def read(self) -> pd.DataFrame:
        """Every recorded row in timestamp order (an empty frame with the key columns if none)."""
        return _frame(self.log.rows()).sort_values("timestamp", kind="stable", ignore_index=True)

    def append(self, rows: pd.DataFrame) -> None:
        """Add ``rows`` (new metric columns are fine: older rows get NaN there)."""
        self.log.append(_log_rows(rows))

    def adopt(self, path: Path) -> int:
        """Take the rows of the Parquet history at ``path`` that the log lacks; returns how many. A file that
        cannot be read as a history (damaged, or a key column gone) is moved aside, with a warning, for the export
        to write a whole copy in its place."""
        import pandas as pd

        if not path.is_file():
            return 0
        try:
            rows = _log_rows(pd.read_parquet(path))
        except Exception as exc:  # pyarrow's errors, a missing column, a value of the wrong type
            aside = path.with_name(f"{path.name}.unreadable")
            os.replace(path, aside)
            log.warning("%s is no evaluation history (%s: %s): moved to %s", path, type(exc).__name__, exc, aside)
            return 0
        return self.log.adopt(rows)

    def export(self, path: Path) -> pd.DataFrame:
        """Write every row to ``path`` as Parquet, replacing it atomically; returns them, as ``read`` does."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".parquet.tmp")
        rows = self.read()
        rows.to_parquet(tmp, index=False)
        os.replace(tmp, path)
        return rows


def _frame(rows: Sequence[EvaluationRow]) -> pd.DataFrame:
    """The log's rows as the history frame: key columns, then one column per metric."""
    import pandas as pd

    if not rows:
        return pd.DataFrame({column: pd.Series(dtype=dtype) for column, dtype in _KEY_DTYPES.items()})
    frame = pd.DataFrame(
        [
            {
                "run_id": r.run_id,
                "timestamp": pd.Timestamp(r.at, unit="s", tz="UTC"),
                "dataset": r.dataset,
                "namespace": r.namespace,
                "mode": r.mode,
                "k": r.k,
                "good": r.good,
                **r.metrics,
            }
            for r in rows
        ]
    )
    return frame.astype(_KEY_DTYPES)


def _log_rows(frame: pd.DataFrame) -> list[EvaluationRow]:
    """History frame rows as the log's rows (a metric that is NaN in a row is not recorded for it; a column that is
    not numeric, a note added for analysis say, is no metric)."""
    import pandas as pd

    metrics = [
        c
        for c in frame.columns
        if c not in _KEY_DTYPES and pd.api.types.is_numeric_dtype(frame[c]) and not pd.api.types.is_bool_dtype(frame[c])
    ]
    return [
        EvaluationRow(
            run_id=str(row["run_id"]),
            at=_utc(row["timestamp"]).timestamp(),
            dataset=str(row["dataset"]),
            namespace=str(row["namespace"]),
            mode=str(row["mode"]),
            k=int(row["k"]),
            good=bool(row["good"]),
            metrics={m: float(row[m]) for m in metrics if row[m] == row[m]},
        )
        for row in frame.to_dict("records")
    ]


@dataclass(frozen=True)
class ModeTrend:
    """One mode's metrics now, in its previous run and in its last good run (None: no such run)."""

    dataset: str
    mode: str
    current: dict[str, float]
    previous: dict[str, float] | None
    last_good: dict[str, float] | None
    tolerance: float

    def change(self, metric: str) -> float | None:
        """``metric`` now minus in the previous run."""
        return None if self.previous is None else self.current[metric] - self.previous.get(metric, float("nan"))

    @property
    def drop(self) -> float | None:
        """How far nDCG@10 fell below the last good run (negative: it rose)."""
        return None if self.last_good is None else self.last_good[NDCG] - self.current[NDCG]

    @property
    def regressed(self) -> bool:
        return self.drop is not None and self.drop - self.tolerance > _EPSILON

    def failure(self) -> str:
        """The regression, in words."""
        assert self.last_good is not None and self.drop is not None
        return (
            f"{self.dataset}/{self.mode}: {NDCG} {self.current[NDCG]:.4f} is {self.drop:.4f} below the last good "
            f"run's {self.last_good[NDCG]:.4f} (tolerance {self.tolerance})"
        )


def compare(
    reports: Sequence[EvaluationReport], past: pd.DataFrame, *, tolerance: float = DEFAULT_TOLERANCE
) -> list[ModeTrend]:
    """Each evaluated mode against its previous and last good rows in ``past`` (same dataset, namespace and mode)."""
    trends = []
    for report in reports:
        summaries = report.metrics
        for mode, row in summaries.iterrows():
            same = (past["dataset"] == report.dataset) & (past["namespace"] == report.namespace)
            earlier = past[same & (past["mode"] == mode)]
            good = earlier[earlier["good"].astype(bool)]
            trends.append(
                ModeTrend(
                    dataset=report.dataset,
                    mode=str(mode),
                    current=row.to_dict(),
                    previous=_metrics(earlier.iloc[-1], summaries.columns) if len(earlier) else None,
                    last_good=_metrics(good.iloc[-1], summaries.columns) if len(good) else None,
                    tolerance=tolerance,
                )
            )
    return trends


def _metrics(row: pd.Series, columns: pd.Index) -> dict[str, float]:
    return {c: float(row[c]) for c in columns if c in row.index}


def history_rows(
    reports: Sequence[EvaluationReport], trends: Sequence[ModeTrend], *, run_id: str, timestamp: datetime
) -> pd.DataFrame:
    """This run's rows: one per dataset and mode, ``good`` unless that mode regressed."""
    import pandas as pd

    regressed = {(t.dataset, t.mode) for t in trends if t.regressed}
    rows = [
        {
            "run_id": run_id,
            "timestamp": _utc(timestamp),
            "dataset": report.dataset,
            "namespace": report.namespace,
            "mode": str(mode),
            "k": report.k,
            "good": (report.dataset, mode) not in regressed,
            **summary.to_dict(),
        }
        for report in reports
        for mode, summary in report.metrics.iterrows()
    ]
    return pd.DataFrame(rows).astype({"timestamp": "datetime64[us, UTC]"})


def _utc(timestamp: datetime) -> pd.Timestamp:
    """``timestamp`` in UTC (a naive one is taken as UTC)."""
    import pandas as pd

    ts = pd.Timestamp(timestamp)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def record_run(
    history: EvaluationHistory,
    reports: Sequence[EvaluationReport],
    *,
    run_id: str,
    timestamp: datetime,
    tolerance: float = DEFAULT_TOLERANCE,
) -> list[ModeTrend]:
    """Compare with the history, then append this run; returns the trends (``regressed`` marks failures)."""
    trends = compare(reports, history.read(), tolerance=tolerance)
    history.append(history_rows(reports, trends, run_id=run_id, timestamp=timestamp))
    return trends


def record_answers(
    history: EvaluationHistory, reports: Sequence[AnswerReport], *, run_id: str, timestamp: datetime
) -> list[ModeTrend]:
    """Append one row per answer report (``mode`` = ``answers-<answerer>``, answer metric columns) and return each
    one's trend against its previous row. Answer metrics are reported, not gated: no regression check."""
    import pandas as pd

    if not reports:
        return []
    past = history.read()
    trends = []
    for report in reports:
        current = report.summary()
        earlier = past[(past["dataset"] == report.dataset) & (past["mode"] == report.label)]
        previous = {name: float(earlier.iloc[-1][name]) for name in current if name in earlier.columns}
        trends.append(ModeTrend(report.dataset, report.label, current, previous if len(earlier) else None, None, 0.0))
    rows = [
        {
            "run_id": run_id,
            "timestamp": _utc(timestamp),
            "dataset": r.dataset,
            "namespace": r.namespace,
            "mode": r.label,
            "k": r.k,
            "good": True,
            **r.summary(),
        }
        for r in reports
    ]
    history.append(pd.DataFrame(rows).astype({"timestamp": "datetime64[us, UTC]"}))
    return trends

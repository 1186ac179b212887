"""Evaluation results for people: Markdown with trend arrows, rows for table artifacts (retrieval and answers), an
nDCG@10 chart (PNG)."""

from __future__ import annotations

import base64
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from ragline.evaluation.answers import (
    ANSWER_LATENCY,
    COST,
    INPUT_TOKENS,
    OUTPUT_TOKENS,
    QUALITY_METRICS,
    AnswerReport,
)
from ragline.evaluation.history import ModeTrend
from ragline.evaluation.metrics import NDCG, latency_names, metric_names
from ragline.evaluation.runner import EvaluationReport

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

UNCHANGED = 0.0005
"""Changes smaller than this show as unchanged."""
MODE_COLOURS = {"dense": "tab:blue", "bm25": "tab:orange", "hybrid": "tab:green"}


def trend_arrow(change: float | None) -> str:
    """▲/▼ with the signed change, ``=`` when unchanged, ``–`` when there is nothing to compare with."""
    if change is None or math.isnan(change):
        return "–"
    if abs(change) < UNCHANGED:
        return "="
    return f"▲ +{change:.3f}" if change > 0 else f"▼ −{-change:.3f}"


def check_status(trend: ModeTrend | None) -> str:
    """``baseline`` (nothing to compare with), ``ok``, or ``REGRESSION −drop``."""
    if trend is None or trend.drop is None:
        return "baseline"
    return f"REGRESSION −{trend.drop:.3f}" if trend.regressed else "ok"


def _trends_by_key(trends: Sequence[ModeTrend]) -> dict[tuple[str, str], ModeTrend]:
    return {(t.dataset, t.mode): t for t in trends}


def metric_rows(reports: Sequence[EvaluationReport], trends: Sequence[ModeTrend]) -> list[dict[str, str | float]]:
    """One row per dataset, mode and metric (narrow enough for any screen): its value, its change vs the previous
    run, and on the nDCG@10 row the regression check's status."""
    by_key = _trends_by_key(trends)
    rows: list[dict[str, str | float]] = []
    for report in reports:
        for mode, summary in report.metrics.iterrows():
            trend = by_key.get((report.dataset, str(mode)))
            for name in metric_names(report.k) + latency_names():
                latency = name in latency_names()
                rows.append(
                    {
                        "dataset": report.dataset,
                        "mode": str(mode),
                        "metric": name,
                        "value": round(float(summary[name]), 1 if latency else 4),
                        "vs previous": "" if latency else trend_arrow(trend.change(name) if trend else None),
                        "check": check_status(trend) if name == NDCG else "",
                    }
                )
    return rows


def evaluation_markdown(
    reports: Sequence[EvaluationReport],
    trends: Sequence[ModeTrend],
    *,
    run_id: str,
    tolerance: float,
    chart_png: bytes | None = None,
    answers: Sequence[AnswerReport] = (),
    answer_trends: Sequence[ModeTrend] = (),
) -> str:
    """The run as Markdown: per dataset a mode comparison table with arrows vs the previous run, the answer metrics
    with theirs, then failures."""
    by_key = _trends_by_key(trends)
    lines = [
        f"# Retrieval evaluation `{run_id}`",
        "",
        (
            f"Arrows compare with the previous run (▲ better, ▼ worse, = within {UNCHANGED}, – none). The check "
            f"fails when a mode's {NDCG} is more than {tolerance} below its last good run."
        ),
    ]
    for report in reports:
        queries = len(report.results[0].per_query) if report.results else 0
        metrics = report.metrics  # one row per mode
        modes = [str(mode) for mode in metrics.index]
        trend_of = {mode: by_key.get((report.dataset, mode)) for mode in modes}
        lines += [
            "",
            f"## {report.dataset}: namespace `{report.namespace}`, {queries} queries",
            "",
            "| metric | " + " | ".join(modes) + " |",
            "|---" * (len(modes) + 1) + "|",
        ]
        for name in metric_names(report.k):
            cells = [
                f"{metrics.loc[m, name]:.4f} {trend_arrow(t.change(name) if (t := trend_of[m]) else None)}"
                for m in modes
            ]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines += [
            f"| {name} | " + " | ".join(f"{metrics.loc[m, name]:.1f}" for m in modes) + " |" for name in latency_names()
        ]
        lines.append("| check | " + " | ".join(check_status(trend_of[m]) for m in modes) + " |")
    lines += _answers_markdown(answers, answer_trends)
    failures = [t.failure() for t in trends if t.regressed]
    if failures:
        lines += ["", "## Regressions", ""] + [f"- {failure}" for failure in failures]
    if chart_png is not None:
        lines += ["", f"![{NDCG} per mode]({png_data_uri(chart_png)})"]
    return "\n".join(lines) + "\n"


def answer_metric_rows(reports: Sequence[AnswerReport], trends: Sequence[ModeTrend]) -> list[dict[str, str | float]]:
    """One row per answer report and metric: its value (quality metrics 4 decimals) and, for quality metrics, the
    change vs the previous run."""
    by_key = _trends_by_key(trends)
    rows: list[dict[str, str | float]] = []
    for report in reports:
        trend = by_key.get((report.dataset, report.label))
        answerer = f"{report.answerer} ({report.mode} retrieval, judged by {report.judge})"
        for name, value in report.summary().items():
            quality = name in QUALITY_METRICS
            rows.append(
                {
                    "dataset": report.dataset,
                    "answerer": answerer,
                    "metric": name,
                    "value": round(value, 4 if quality else 6 if name == COST else 1),
                    "vs previous": trend_arrow(trend.change(name) if trend else None) if quality else "",
                }
            )
    return rows


def _answers_markdown(reports: Sequence[AnswerReport], trends: Sequence[ModeTrend]) -> list[str]:
    by_key = _trends_by_key(trends)
    lines: list[str] = []
    for report in reports:
        trend = by_key.get((report.dataset, report.label))
        summary = report.summary()
        lines += [
            "",
            (
                f"## Answers on {report.dataset}: {report.answerer} answerer, {report.mode} retrieval "
                f"(top {report.k}), {len(report.rows)} questions, faithfulness judged by {report.judge}"
            ),
            "",
            "| metric | value | vs previous |",
            "|---|---|---|",
        ]
        lines += [
            f"| {name} | {summary[name]:.4f} | {trend_arrow(trend.change(name) if trend else None)} |"
            for name in QUALITY_METRICS
        ]
        lines += [f"| {name} | {summary[name]:.1f} | |" for name in (*ANSWER_LATENCY, INPUT_TOKENS, OUTPUT_TOKENS)]
        lines.append(f"| {COST} | {summary[COST]:.6f} | |")
    return lines


def png_data_uri(png: bytes) -> str:
    """A ``data:`` URI embedding a PNG (for Markdown and image artifacts, which take URLs only)."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def write_chart(history: pd.DataFrame, path: Path, datasets: Sequence[str] | None = None) -> Path:
    """Draw nDCG@10 per mode, one panel per dataset (``chart``), into a PNG at ``path``."""
    figure = chart(history, datasets)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png", dpi=100)
    return path


def chart(history: pd.DataFrame, datasets: Sequence[str] | None = None) -> Figure:
    """nDCG@10 per mode, one panel per dataset. A dataset with several runs gets a line per mode, one evenly spaced
    point per run labelled with its date and time (runs that failed the check marked with a red ✕); with a single
    run, bars per mode."""
    from matplotlib.figure import Figure  # the Agg canvas, no pyplot state: safe in worker threads

    datasets = list(datasets or history["dataset"].unique())
    figure = Figure(figsize=(7.5, 3.2 * max(len(datasets), 1)), layout="constrained")
    for axes, dataset in zip(figure.subplots(len(datasets), 1, squeeze=False)[:, 0], datasets, strict=True):
        rows = history[(history["dataset"] == dataset) & history[NDCG].notna()]  # answer rows have no nDCG
        if rows["run_id"].nunique() > 1:
            _plot_lines(axes, rows)
        else:
            _plot_bars(axes, rows)
        axes.set_title(dataset)
        axes.set_ylabel(NDCG)
        axes.set_ylim(0, 1)
        axes.grid(axis="y", alpha=0.3)
    return figure


MAX_RUN_LABELS = 12
"""Most runs labelled on the x axis; the others keep their tick without a label."""


def run_labels(timestamps: Sequence[pd.Timestamp]) -> list[str]:
    """One label per run, its UTC date and time to the minute (``2026-12-06 02:00``), the way nightly runs read."""
    return [t.strftime("%Y-%m-%d %H:%M") for t in timestamps]


def _plot_lines(axes: Axes, rows: pd.DataFrame) -> None:
    """nDCG@10 per mode over the runs, one evenly spaced position per run, labelled by when it ran."""
    runs = rows.groupby("run_id")["timestamp"].min().sort_values()
    position = {run_id: i for i, run_id in enumerate(runs.index)}
    for mode, series in rows.groupby("mode", sort=True):
        colour = MODE_COLOURS.get(str(mode), "tab:gray")
        series = series.sort_values("timestamp")
        x = [position[r] for r in series["run_id"]]
        axes.plot(x, series[NDCG], marker="o", color=colour, label=str(mode))
        failed = series[~series["good"].astype(bool)]
        axes.scatter([position[r] for r in failed["run_id"]], failed[NDCG], marker="x", s=90, color="tab:red", zorder=3)
    step = max(1, -(-len(runs) // MAX_RUN_LABELS))
    axes.set_xticks(range(len(runs)))
    axes.set_xticklabels([label if i % step == 0 else "" for i, label in enumerate(run_labels(list(runs)))])
    axes.tick_params(axis="x", labelrotation=30)
    axes.set_xlabel("run (UTC)")
    axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0))


def _plot_bars(axes: Axes, rows: pd.DataFrame) -> None:
    modes = rows["mode"].astype(str)
    bars = axes.bar(modes, rows[NDCG], color=[MODE_COLOURS.get(m, "tab:gray") for m in modes])
    axes.bar_label(bars, fmt="%.3f")

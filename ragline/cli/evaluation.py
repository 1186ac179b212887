"""The ``eval`` command: score the retrieval modes and answers on the golden sets, fail on a regression."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional, get_args

import typer
from rich.table import Table

from ragline.cli.progress import showing_progress
from ragline.cli.shared import FlowOption, HomeOption, NamespaceOption, console, in_range, styled, tracked
from ragline.config import RaglineConfig, RetrievalMode, load_config

if TYPE_CHECKING:
    from ragline.evaluation.suite import EvaluationRun, GoldenSet


def _checked_modes(modes: list[str] | None) -> list[str] | None:
    """``--mode`` values, each a retrieval mode, or a usage error naming the one that is not."""
    known = get_args(RetrievalMode)
    for mode in modes or ():
        if mode not in known:
            raise typer.BadParameter(f"{mode!r} is not one of {', '.join(map(repr, known))}")
    return modes


def eval_command(
    dataset: Annotated[
        Optional[list[Path]],
        typer.Option(
            "--dataset",
            "-d",
            exists=True,
            file_okay=False,
            help="A BEIR folder to ingest into namespace beir-<name> and evaluate "
            "(repeatable; its embeddings come from the shared cache). Given datasets replace the sample set.",
        ),
    ] = None,
    mode: Annotated[
        Optional[list[str]],
        typer.Option(
            "--mode",
            "-m",
            callback=_checked_modes,
            help="Retrieval mode: dense, bm25 or hybrid (repeatable; default: all three).",
        ),
    ] = None,
    tolerance: Annotated[
        Optional[float],
        typer.Option("--tolerance", callback=in_range(0), help="Allowed nDCG@10 drop below the last good run."),
    ] = None,
    namespace: NamespaceOption = None,
    home: HomeOption = None,
    use_flow: FlowOption = None,
) -> None:
    """Score each retrieval mode on the golden sets, append the history, exit 1 on an nDCG@10 regression."""
    config = load_config(
        home=home,
        namespace=namespace,
        eval_beir_datasets=dataset,
        eval_modes=mode,
        eval_tolerance=tolerance,
        eval_sample_path="" if dataset else None,
    )
    from ragline.evaluation.suite import golden_sets

    sets = golden_sets(config)  # a folder whose name makes no namespace, or two of one name: refused before any work
    if tracked(use_flow):
        from ragline.flows.evaluate import evaluate_flow

        result = evaluate_flow(
            home=str(home) if home else None,
            namespace=namespace,
            beir=[str(p) for p in dataset] if dataset else None,
            modes=mode,
            tolerance=tolerance,
        )
        console.print_json(json.dumps(result))
        return
    failures = _evaluate_directly(config, sets)
    for failure in failures:
        console.print(styled("red", "regression:", f" {failure}"), soft_wrap=True)
    if failures:
        raise typer.Exit(code=1)


def _evaluate_directly(config: RaglineConfig, sets: list[GoldenSet]) -> list[str]:
    """Run the golden sets here, print a table per set (a column per mode); returns the regressions."""
    from ragline.components import build_components
    from ragline.evaluation.history import history_path
    from ragline.evaluation.metrics import NDCG, latency_names, metric_names
    from ragline.evaluation.report import check_status, trend_arrow
    from ragline.evaluation.suite import run_suite
    from ragline.indexing.journal import new_run_id

    with showing_progress():
        run = run_suite(build_components(config), sets, run_id=new_run_id())
    trends = {(t.dataset, t.mode): t for t in run.trends}
    for report in run.reports:
        summary = report.metrics  # one row per mode
        modes = [trends[report.dataset, str(mode)] for mode in summary.index]
        table = Table(title=f"{report.dataset} → namespace {report.namespace} (run {run.run_id})")
        table.add_column("metric")
        for mode in summary.index:
            table.add_column(str(mode), justify="right")
        for name in metric_names(report.k):
            table.add_row(name, *(f"{value:.3f}" for value in summary[name]))
        table.add_row(f"Δ {NDCG} vs previous", *(trend_arrow(t.change(NDCG)) for t in modes))
        for name in latency_names():
            table.add_row(name, *(f"{value:.1f}" for value in summary[name]))
        table.add_row("check", *(check_status(t) for t in modes))
        console.print(table)
    _print_answer_reports(run)
    console.print(f"history copy {history_path(config.home)}, chart {run.chart}", soft_wrap=True)
    return run.failures


def _print_answer_reports(run: EvaluationRun) -> None:
    """One table per answer report: each metric with its change vs the previous run."""
    from ragline.evaluation.answers import COST, QUALITY_METRICS
    from ragline.evaluation.report import answer_metric_rows

    for report in run.answers:
        rows = answer_metric_rows([report], run.answer_trends)
        table = Table(
            title=f"answers on {report.dataset}: {report.answerer} answerer, {report.mode} retrieval, "
            f"faithfulness judged by {report.judge}"
        )
        table.add_column("metric")
        table.add_column("value", justify="right")
        table.add_column("vs previous", justify="right")
        for row in rows:
            name = str(row["metric"])
            decimals = 4 if name in QUALITY_METRICS else 6 if name == COST else 1
            table.add_row(name, f"{float(row['value']):.{decimals}f}", str(row["vs previous"]))
        console.print(table)

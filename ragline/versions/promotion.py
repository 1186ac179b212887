"""Changing which index version serves: promotion gated by evaluation, and dropping versions no longer wanted.

A promotion scores the candidate and the live target on the same golden set with the same retrieval mode
(nDCG@10, ``config.promote_mode``) and switches the alias only if candidate ≥ live − ``config.promote_tolerance``;
``force`` skips the gate. The candidate's namespace lock is held from the check to the switch, so no run writes it
while it is judged, and the switch is refused if the alias moved in the meantime (``switch_alias``).
Each namespace is scored with the embedding model it was built with, so a version built with another model is
judged fairly.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ragline.components import Components, build_components
from ragline.config import RaglineConfig
from ragline.embedders.hashing import HashingEmbedder
from ragline.errors import ConfigError
from ragline.evaluation.datasets import EvalDataset, load_dataset
from ragline.evaluation.metrics import NDCG
from ragline.evaluation.runner import evaluate_mode
from ragline.indexing.consistency import await_writes
from ragline.names import version_namespace
from ragline.recordstore import RecordStore
from ragline.recordstore.rows import AliasEvent
from ragline.retrieval.bm25 import index_folder
from ragline.versions.aliases import read_namespace

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PromotionDecision:
    """The gate's verdict on promoting ``candidate`` over ``live`` for ``alias`` (scores None when forced)."""

    alias: str
    candidate: str
    live: str
    mode: str
    tolerance: float
    candidate_ndcg: float | None
    live_ndcg: float | None
    forced: bool = False

    @classmethod
    def from_scores(
        cls, config: RaglineConfig, alias: str, candidate: str, live: str, scores: tuple[float, float] | None
    ) -> PromotionDecision:
        """The decision for (candidate, live) nDCG@10 ``scores`` under the config's gate; None means forced."""
        candidate_ndcg, live_ndcg = scores or (None, None)
        return cls(
            alias,
            candidate,
            live,
            config.promote_mode,
            config.promote_tolerance,
            candidate_ndcg,
            live_ndcg,
            forced=scores is None,
        )

    @property
    def passed(self) -> bool:
        """Forced, or candidate nDCG@10 ≥ live − tolerance."""
        if self.candidate_ndcg is None or self.live_ndcg is None:
            return self.forced
        return self.candidate_ndcg >= self.live_ndcg - self.tolerance

    def summary(self) -> str:
        """One line: both scores, the tolerance and the verdict."""
        if self.candidate_ndcg is None or self.live_ndcg is None:
            return f"{self.candidate} forced over {self.live} without evaluation"
        verdict = "passes" if self.passed else "refused"
        return (
            f"{verdict}: candidate {self.candidate} nDCG@10 {self.candidate_ndcg:.4f} vs live {self.live} "
            f"{self.live_ndcg:.4f} ({self.mode}, tolerance {self.tolerance:.4f})"
        )

    def markdown(self) -> str:
        """The decision as a Markdown report (the promote flow's artifact)."""
        lines = [
            f"# Promotion of `{self.candidate}` for alias `{self.alias}`",
            "",
            f"**{'promoted' if self.passed else 'refused'}**: {self.summary()}",
            "",
        ]
        if self.candidate_ndcg is not None and self.live_ndcg is not None:
            lines += [
                "| namespace | role | nDCG@10 |",
                "|---|---|---|",
                f"| `{self.candidate}` | candidate | {self.candidate_ndcg:.4f} |",
                f"| `{self.live}` | live | {self.live_ndcg:.4f} |",
                "",
                f"Gate: candidate ≥ live − {self.tolerance:.4f} (mode {self.mode}).",
            ]
        return "\n".join(lines) + "\n"


def candidate_namespace(alias: str, version: str) -> str:
    """The physical namespace promoting ``version`` points ``alias`` at: ``<alias>--<version>``, or the base namespace
    itself when ``version`` is the alias's own name (the way back to the base once the rollback chain is cut)."""
    return alias if version == alias else version_namespace(alias, version)


def promotion_targets(records: RecordStore, alias: str, version: str) -> tuple[str, str]:
    """(candidate, live) physical namespaces; refuses a version that does not exist, is live, or has a run open."""
    candidate = candidate_namespace(alias, version)
    if records.journal.namespace_model(candidate) is None:
        raise ConfigError(
            f"version {version!r} of {alias!r} does not exist: build it first with "
            f"`ragline ingest PATH -n {alias} --index-version {version}`"
        )
    live = read_namespace(records, alias)
    if candidate == live:
        raise ConfigError(f"version {version!r} is already live for {alias!r}")
    if records.journal.unfinished_runs(candidate):
        raise ConfigError(
            f"namespace {candidate!r} has an unfinished run: run "
            f"`ragline reconcile -n {alias} --index-version {version}` first"
        )
    return candidate, live


def golden_set(config: RaglineConfig, path: Path | None = None) -> EvalDataset:
    """The golden set the gate scores: ``path``, else ``config.eval_sample_path``."""
    path = path or config.eval_sample_path
    if path is None:
        raise ConfigError("no golden set to evaluate the promotion on: pass one, set eval_sample_path, or force it")
    return load_dataset(Path(path))


def score_namespace(c: Components, dataset: EvalDataset, namespace: str) -> float:
    """nDCG@10 of ``config.promote_mode`` on ``dataset`` against ``namespace``, queried with its own model."""
    with components_for_namespace(c, namespace) as nc:
        result = evaluate_mode(
            nc, dataset, namespace=namespace, mode=c.config.promote_mode, k=c.config.eval_k, depth=c.config.eval_depth
        )
    return float(result.summary()[NDCG])


def switch_to_candidate(records: RecordStore, decision: PromotionDecision, *, actor: str) -> AliasEvent:
    """Switch the alias to the candidate (one transaction); refuses a decision that did not pass."""
    if not decision.passed:
        raise ConfigError(f"promotion {decision.summary()}")
    return records.aliases.switch(
        decision.alias, decision.candidate, expected_target=decision.live, actor=actor, detail=decision.summary()
    )


def promote(
    c: Components, alias: str, version: str, *, actor: str, dataset_path: Path | None = None, force: bool = False
) -> PromotionDecision:
    """Judge ``version`` of ``alias`` against the live target and switch the alias if it passes (or ``force``)."""
    candidate = candidate_namespace(alias, version)
    with c.locks.hold(candidate):
        candidate, live = promotion_targets(c.records, alias, version)
        scores = None
        if not force:
            dataset = golden_set(c.config, dataset_path)
            scores = (score_namespace(c, dataset, candidate), score_namespace(c, dataset, live))
        decision = PromotionDecision.from_scores(c.config, alias, candidate, live, scores)
        if decision.passed:
            switch_to_candidate(c.records, decision, actor=actor)
    log.info("promotion of %s for %s: %s", candidate, alias, decision.summary())
    return decision


def drop_version(c: Components, alias: str, version: str) -> None:
    """Delete a version that is not live: its record rows, its vectors (dense and sparse) and its BM25 index folder."""
    namespace = version_namespace(alias, version)
    with c.locks.hold(namespace):
        if read_namespace(c.records, alias) == namespace:
            raise ConfigError(
                f"version {version!r} is live for {alias!r}: promote another version or roll back before dropping it"
            )
        vectors = c.store.describe_namespace(namespace).vector_count
        if (
            c.records.journal.namespace_model(namespace) is None
            and not c.records.journal.expected_index_ids_count(namespace)
            and not vectors
        ):
            raise ConfigError(f"version {version!r} of {alias!r} does not exist")
        c.records.drop_namespace(namespace)  # first: a rollback can no longer point at it
        if vectors:
            c.store.delete(namespace=namespace, delete_all=True)
        if c.sparse is not None and c.sparse.describe_namespace(namespace).vector_count:
            c.sparse.delete(namespace=namespace, delete_all=True)
        await_writes(c, namespace)  # a version built again at once must not count the dropped vectors
        shutil.rmtree(index_folder(c.config, namespace), ignore_errors=True)
    log.info("dropped %s (%d vectors)", namespace, vectors)


@contextmanager
def components_for_namespace(c: Components, namespace: str) -> Iterator[Components]:
    """``c``, or components configured for the model ``namespace`` was built with when that is another one."""
    bound = c.records.journal.namespace_model(namespace)
    if bound is None or bound[0] == c.embedder.model_id:
        yield c
        return
    other = build_components(config_for_model(c.config, bound[0]))
    try:
        yield other
    finally:
        other.close()


def config_for_model(config: RaglineConfig, model_id: str) -> RaglineConfig:
    """``config`` with its embedder settings changed to produce ``model_id`` (``local/<name>``,
    ``openai/<model>[@<dimensions>]``, ``hashing/384``)."""
    kind, _, name = model_id.partition("/")
    if model_id == HashingEmbedder().model_id:
        return config.model_copy(update={"embedder": "hashing"})
    if kind == "local" and name:
        return config.model_copy(update={"embedder": "local", "local_model": name})
    if kind == "openai" and name:
        model, _, dimensions = name.partition("@")
        return config.model_copy(
            update={
                "embedder": "openai",
                "openai_model": model,
                "openai_dimensions": int(dimensions) if dimensions else None,
            }
        )
    raise ConfigError(f"cannot build an embedder for model {model_id!r}")

"""Thin Prefect tasks over ragline's promotion gate: one task run per namespace scored, one for the switch."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from ragline.components import components_for
from ragline.config import RaglineConfig
from ragline.evaluation.datasets import EvalDataset
from ragline.recordstore.rows import AliasEvent
from ragline.versions import promotion
from ragline.versions.promotion import PromotionDecision


@task(cache_policy=NO_CACHE)
def score_namespace(config: RaglineConfig, dataset: EvalDataset, namespace: str) -> float:
    """nDCG@10 of the gate's retrieval mode on the golden set against one physical namespace."""
    return promotion.score_namespace(components_for(config), dataset, namespace)


@task(cache_policy=NO_CACHE)
def switch_alias(config: RaglineConfig, decision: PromotionDecision, actor: str) -> AliasEvent:
    """Point the alias at the candidate and record it, in one transaction."""
    return promotion.switch_to_candidate(components_for(config).records, decision, actor=actor)

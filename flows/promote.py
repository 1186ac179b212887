"""The promote flow: evaluate a candidate index version against the live one, promote it only if it is not worse.

Both physical namespaces are scored on the golden set (nDCG@10, ``promote_mode``); the alias switches to the
candidate if candidate ≥ live − ``promote_tolerance`` (``force`` skips the evaluation). The run publishes the
``promotion`` artifact (both scores and the verdict) and fails when the gate refuses.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow
from prefect.artifacts import create_markdown_artifact
from prefect.runtime import flow_run

from ragline.components import components_for
from ragline.config import load_config
from ragline.errors import ValidationFailed
from ragline.indexing.locks import make_locks
from ragline.names import version_namespace
from ragline.tasks.promote import score_namespace, switch_alias
from ragline.tasks.secrets import resolve_secret_blocks
from ragline.versions.promotion import PromotionDecision, golden_set, promotion_targets


@flow(name="promote")
def promote_flow(
    namespace: str,
    version: str,
    home: str | None = None,
    dataset: str | None = None,
    tolerance: float | None = None,
    force: bool = False,
    actor: str | None = None,
) -> dict[str, object]:
    """Promote ``version`` of ``namespace`` if it passes the evaluation gate; returns the decision."""
    config = resolve_secret_blocks(load_config(home=home, namespace=namespace, promote_tolerance=tolerance))
    with make_locks(config).hold(version_namespace(namespace, version)):
        candidate, live = promotion_targets(components_for(config).records, namespace, version)
        scores = None
        if not force:
            golden = golden_set(config, Path(dataset) if dataset else None)
            scores = (score_namespace(config, golden, candidate), score_namespace(config, golden, live))
        decision = PromotionDecision.from_scores(config, namespace, candidate, live, scores)
        if decision.passed:
            switch_alias(config, decision, actor or f"flow run {flow_run.name}")
    create_markdown_artifact(key="promotion", markdown=decision.markdown(), description="Index version promotion")
    if not decision.passed:
        raise ValidationFailed("promotion", [decision.summary()])
    return {
        "promoted": decision.candidate,
        "previous": decision.live,
        "candidate_ndcg": decision.candidate_ndcg,
        "live_ndcg": decision.live_ndcg,
        "forced": decision.forced,
    }


if __name__ == "__main__":
    # Serve the flow so promotions can be started from the Prefect UI (Deployments → promote-manual → Run).
    promote_flow.serve(name="promote-manual")

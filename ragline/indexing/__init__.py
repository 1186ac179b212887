"""The write path: load → chunk → dedupe → embed → validate → upsert → verify → commit, and what keeps it right.

- ``stages``: each stage as a function over one batch (what a Prefect task wraps);
- ``pipeline``: the one driver that runs them, directly or through task-backed ``steps``;
- ``journal``: opening, verifying, committing and rolling back a run against the record store's run journal;
- ``refresh``, ``backfill``, ``reconcile``: the other pipelines, built on the same stages;
- ``chunking``, ``near_duplicates``, ``validation``, ``bulk_import``: the parts stages use.
"""

"""Thin Prefect tasks over the core stages, and ``TaskSteps``, which runs a core driver's stages as task runs."""

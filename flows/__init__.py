"""Prefect flows: each composes one core driver with task-backed steps and publishes its artifacts."""

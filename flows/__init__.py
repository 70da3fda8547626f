"""Prefect flows: each composes stages from `tasks/` and nothing else."""

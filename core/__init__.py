"""Shared library: config, run folders, jobs, metrics, models, inference, media and tiny models."""

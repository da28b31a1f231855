"""Shared library: config, run folders, jobs, metrics, models, inference, media and tiny models."""

from core.library_logs import silence_library_notices

# Before any recipe loads transformers, which imports torchao (see core/library_logs.py).
silence_library_notices()

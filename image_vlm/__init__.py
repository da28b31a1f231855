"""Image VLM recipe: Qwen2.5-VL trained with GRPO to detect wildfire in satellite tiles."""

import core  # noqa: F401,E402 - first: importing core silences library notices (core/library_logs.py) before transformers loads

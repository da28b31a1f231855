"""Video VLM recipe: InternVL3 supervised fine-tuning that emits schema-valid JSON for dashcam clips."""

import core  # noqa: F401,E402 - first: importing core silences library notices (core/library_logs.py) before transformers loads

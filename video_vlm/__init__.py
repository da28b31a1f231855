"""Video VLM recipe: InternVL3 supervised fine-tuning that emits schema-valid JSON for dashcam clips."""

"""Image VLM recipe: Qwen2.5-VL trained with GRPO to detect wildfire in satellite tiles."""

"""vLLM for GRPO's rollouts: TRL's arguments for it, and why this machine cannot run it (one line, before launch).

`train.use_vllm` generates with vLLM inside the training process (colocate mode), or on the `trl vllm-serve` at
`train.vllm_server_url` (server mode).
"""

from __future__ import annotations

import importlib.util

from image_vlm.config import GRPOSection

# vLLM is no extra of this project: each vLLM wheel pins one torch, and no release TRL 1.16 supports pins 2.15.0.
VLLM_NOT_INSTALLED = (
    "train.use_vllm needs vllm, which is not installed: TRL 1.16 supports vllm 0.22-0.31, whose wheels pin torch "
    "2.11.0 (0.22-0.26) or 2.13.0 (0.27-0.31), not this project's torch 2.15.0; set train.use_vllm=false, or use an "
    "environment with torch==2.13.0 and `pip install 'vllm>=0.27,<=0.31'`"
)


def vllm_arguments(t: GRPOSection) -> dict:
    """TRL's vLLM arguments: none without vLLM; server mode when a URL is given, else colocate (TRL's default)."""
    if not t.use_vllm:
        return {}
    if t.vllm_server_url:
        return {"use_vllm": True, "vllm_mode": "server", "vllm_server_base_url": t.vllm_server_url}
    return {"use_vllm": True, "vllm_mode": "colocate", "vllm_gpu_memory_utilization": t.vllm_gpu_memory_utilization}


def vllm_problem(t: GRPOSection) -> str | None:
    """Why this machine cannot run the configured vLLM rollouts, or None.

    Server mode needs the same two things on the trainer's side as colocate mode: TRL's VLLMClient refuses to
    start without the vllm package (its weight sync is vLLM's NCCL engine), and NCCL needs a CUDA device.
    """
    if not t.use_vllm:
        return None
    if importlib.util.find_spec("vllm") is None:
        return VLLM_NOT_INSTALLED
    import torch  # only for a vLLM run: every other launch still hears "GPU busy" before torch loads

    if not torch.cuda.is_available():
        if t.vllm_server_url:
            return (
                "train.vllm_server_url (vLLM server mode) needs a CUDA GPU on the trainer too: the weights reach the "
                "server over NCCL; set train.use_vllm=false on CPU"
            )
        return "train.use_vllm (vLLM colocate mode) needs a CUDA GPU; set train.use_vllm=false on CPU"
    return None

"""Losses run in at least float32: under autocast their inputs may arrive in float16/bfloat16."""
import torch


def at_least_float32(tensor: torch.Tensor) -> torch.Tensor:
    """Upcast half-precision tensors to float32; float32 and float64 pass through unchanged."""
    return tensor.float() if tensor.dtype in (torch.float16, torch.bfloat16) else tensor

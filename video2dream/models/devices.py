"""--device and --dtype: 'auto' picks cuda, then mps, then cpu; fp16/bf16 on a GPU, fp32 on the CPU."""

from __future__ import annotations

import gc
import sys
from typing import TYPE_CHECKING

from ..errors import SettingError

if TYPE_CHECKING:
    import torch

DTYPES = {"fp32": "float32", "float32": "float32", "fp16": "float16", "float16": "float16",
          "bf16": "bfloat16", "bfloat16": "bfloat16"}


def pick_device(name: str = "auto") -> torch.device:
    import torch

    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise SettingError("device", f"'{name}': no CUDA device is available here", "use cpu or auto")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise SettingError("device", "'mps': Apple's Metal backend is not available here", "use cpu or auto")
    return torch.device(name)


def pick_dtype(name: str, device: torch.device) -> torch.dtype:
    import torch

    if name == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        if device.type == "mps":
            return torch.float16
        return torch.float32
    if name not in DTYPES:
        raise SettingError("dtype", f"'{name}' is unknown: choose from auto, fp32, fp16, bf16")
    return getattr(torch, DTYPES[name])


def check_device(device: str, dtype: str) -> None:
    """Fail early, with a clear line, when this machine cannot honour --device / --dtype."""
    pick_dtype(dtype, pick_device(device))


def free_memory() -> None:
    """Return memory of models that were just dropped, before the next stage loads its own."""
    gc.collect()
    torch = sys.modules.get("torch")  # a stage whose models ran elsewhere (--backend replicate) loaded none
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()

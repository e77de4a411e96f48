"""Where a router runs: the torch device and dtype asked for by `Router(device=, dtype=)` and `Client`, checked.

    device, dtype = torch_device("cuda"), torch_dtype("bfloat16")     # a RouterError where CUDA is absent
    place(model, device, dtype)                                        # the LLM in dtype, the rest in fp32

The CPU and fp32 are the defaults (the CPU here has AVX2 only: bf16 and fp16 are slower there than fp32). CUDA is used
only where it is asked for (`device="cuda"`, `"cuda:1"`, or `"auto"`: CUDA where present, else the CPU) and present.
"""
from __future__ import annotations

import torch

DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
          "float16": torch.float16, "fp16": torch.float16}


class DeviceError(ValueError):
    """A device or dtype that cannot be used here (e.g. CUDA asked for where torch sees no GPU)."""


def torch_device(device: object = None) -> torch.device:
    """`device` (None or "cpu": the CPU; "cuda", "cuda:N", a torch.device; "auto": CUDA where present, else the CPU)
    as a torch.device. Raises DeviceError, in one line, where it names no device, or CUDA torch cannot reach."""
    if device is None:
        return torch.device("cpu")
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        out = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise DeviceError(f"device {device!r} is not a device; use 'cpu', 'cuda', 'cuda:N' or 'auto'") from e
    if out.type == "cuda":
        if not torch.cuda.is_available():
            build = "a CPU-only build" if torch.version.cuda is None else f"built for CUDA {torch.version.cuda}"
            raise DeviceError(f"device {device!r}: torch {torch.__version__} ({build}) sees no CUDA GPU here; use "
                              "device='cpu', or install a CUDA build of torch on a machine with a GPU")
        if out.index is not None and out.index >= torch.cuda.device_count():
            raise DeviceError(f"device {device!r}: only {torch.cuda.device_count()} CUDA device(s) here")
    elif out.type != "cpu":
        raise DeviceError(f"device {device!r}: modelsat runs on 'cpu' or 'cuda', not {out.type!r}")
    return out


def torch_dtype(dtype: object = None) -> torch.dtype:
    """`dtype` (None: float32; a torch dtype, or one of DTYPES' names) as a floating torch.dtype the router LLM can
    run in; a DeviceError naming the allowed ones otherwise."""
    if dtype is None:
        return torch.float32
    if isinstance(dtype, str) and dtype in DTYPES:
        return DTYPES[dtype]
    if isinstance(dtype, torch.dtype) and dtype in DTYPES.values():
        return dtype
    raise DeviceError(f"dtype {dtype!r} is not one the router runs in; use float32 (the default), bfloat16 or "
                      "float16 (a string or a torch dtype)")


def place(model, device: torch.device, dtype: torch.dtype) -> None:
    """Move a RouterModel to `device`: its LLM (and frozen lower layers) in `dtype`, its capability encoder in fp32
    (small; it casts its inputs to fp32, and its soft tokens are cast to the LLM's dtype where they enter), and its
    sentence encoder (not a submodule: never trained or saved) in fp32 on the same device."""
    model.to(device)
    model.llm.to(dtype)
    if model.lower is not None:
        model.lower.to(dtype)
    if model.sentence_encoder is not None:
        model.sentence_encoder.st.to(device)

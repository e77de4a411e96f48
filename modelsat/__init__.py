"""modelsat: a learned router for large language models (Model-SAT: model selection with aptitude tests).

    from modelsat import Router
    router = Router.from_pretrained("modelsat-smollm2-mmlupro")      # shipped with the package
    router.rank("What is the derivative of x^2?", top_k=3)           # [Ranked(model, p_correct, cost, utility, ...)]

The package's face: `Router` (the inference API), `Client` (the OpenAI-compatible gateway in-process), `Ranked` (one
ranked candidate) and the errors every entry point raises on bad input, each a ValueError whose one-line message
names what is wrong, where, and what to do.
"""
from __future__ import annotations

from modelsat.version import __version__

_FACE = {   # name -> the module that defines it, imported on first use (PEP 562): `import modelsat` loads no torch
    "Router": "modelsat.router", "RouterError": "modelsat.router",
    "Client": "modelsat.client", "GatewayError": "modelsat.client",
    "Ranked": "modelsat.choice",
    "ConfigError": "modelsat.config", "TableError": "modelsat.data.table", "AptitudeError": "modelsat.aptitude",
    "ZooError": "modelsat.zoo", "CheckpointError": "modelsat.checkpoint", "DeviceError": "modelsat.devices",
    "ModelLoadError": "modelsat.pretrained",
}
__all__ = [*_FACE, "__version__"]


def __getattr__(name: str):
    if name in _FACE:
        import importlib

        return getattr(importlib.import_module(_FACE[name]), name)
    raise AttributeError(f"module 'modelsat' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_FACE])

"""modelsat: a learned router for large language models (Model-SAT: model selection with aptitude tests)."""
from __future__ import annotations

from modelsat.version import __version__

__all__ = ["Client", "Router", "__version__"]


def __getattr__(name: str):
    # The package's face, imported lazily (PEP 562): `import modelsat` stays fast and loads no torch.
    if name == "Router":
        from modelsat.router import Router

        return Router
    if name == "Client":
        from modelsat.client import Client

        return Client
    raise AttributeError(f"module 'modelsat' has no attribute {name!r}")

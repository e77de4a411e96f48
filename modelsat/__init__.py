"""modelsat: a learned router for large language models (Model-SAT: model selection with aptitude tests)."""
from __future__ import annotations

__version__ = "0.2.0"
__all__ = ["Client", "Router", "__version__"]


def __getattr__(name: str):
    # Import the router lazily: `import modelsat` stays fast and does not load torch for the CLI's data jobs.
    if name == "Router":
        from modelsat.router import Router

        return Router
    if name == "Client":
        from modelsat.client import Client

        return Client
    raise AttributeError(f"module 'modelsat' has no attribute {name!r}")

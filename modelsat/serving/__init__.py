"""The serving side of modelsat: `modelsat serve`'s HTTP app and the OpenAI-compatible gateway.

- `app.py`: the FastAPI app (`create_app`): POST /rank, GET/POST /models, DELETE /models/NAME, GET /health, and
  the gateway mounted on it.
- `gateway.py`: POST /v1/chat/completions and GET /v1/models: reading a chat request, ranking its candidates and
  forwarding it (the planning is shared with `modelsat.Client`, which cannot import Starlette).

Nothing is imported here, so that `modelsat.Client` imports only what it needs.
"""

"""The serving side of modelsat: `modelsat serve`'s HTTP app and the OpenAI-compatible gateway (docs/gateway.md).

- `app.py`: the FastAPI app (`create_app`): /rank, /models, /health, /metrics, and the gateway mounted on it.
- `gateway.py`: POST /v1/chat/completions, GET /v1/models: read, rank, forward; loops and self endpoints refused.
- `requests.py`, `plan.py`: reading a chat request and choosing its candidates (shared with `modelsat.Client`).
- `capabilities.py`: what a request needs (tools, images, a JSON schema, tokens) and who can serve it.
- `conversations.py`: conversations kept on one model, and answer ids, in SQLite shared by the workers.
- `upstream.py`, `relay.py`, `answers.py`: forwarding within a deadline over per-upstream pools, answers checked
  before they are relayed, streams relayed event by event.
- `feedback.py`: POST /v1/feedback into the results bank.
- `metrics.py`, `access.py`: Prometheus metrics; request ids, bounded bodies and JSON access lines.
- `batching.py`: the ranking thread (concurrent requests ranked in batches); `workers.py`: running N workers.
- `errors.py`: the gateway's error and its OpenAI-style body.

Nothing is imported here, so that `modelsat.Client` imports only what it needs (no Starlette).
"""

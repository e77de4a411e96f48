"""The OpenAI-compatible endpoints of `modelsat serve`: `POST /v1/chat/completions` and `GET /v1/models`.

A chat request is read and its candidates kept (`plan.prepare`, in a worker thread), ranked by the worker's
ranking thread (`batching.Ranker`, in batches), then forwarded (`upstream.forward`). The client's disconnect
cancels whatever is under way (ranking, an upstream call, a fallback), and the request's deadline bounds it all.
An answer's id is remembered for feedback and its conversation's key for the next turn (`conversations.Store`).

Loops: each forwarded request carries `x-modelsat-via` (the ids of the gateways it went through); a request that
comes back to a gateway already on it, or that went through MAX_HOPS gateways, is refused with 508, and a zoo
entry whose endpoint is this gateway's own address is refused when it is added and never used (`SelfAddress`).
"""
from __future__ import annotations

import ipaddress
import json
import logging
import socket
import threading
import time
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

import anyio
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from modelsat.router import Router
from modelsat.serving.access import REQUEST_ID
from modelsat.serving.batching import Ranker
from modelsat.serving.capabilities import Capabilities
from modelsat.serving.conversations import Store, history_key
from modelsat.serving.errors import GatewayError, bad_request
from modelsat.serving.metrics import Metrics
from modelsat.serving.plan import ROUTE_MODEL, Plan, prepare, with_endpoint
from modelsat.serving.upstream import Forwarding, forward
from modelsat.zoo import ZooEntry

logger = logging.getLogger(__name__)
MAX_HOPS = 4


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not a JSON number")


def _is_local(ip: str) -> bool:
    """Whether `ip` is an address of this machine (loopback, or one a socket can bind to)."""
    address = ipaddress.ip_address(ip)
    if address.is_loopback:
        return True
    try:
        with socket.socket(socket.AF_INET6 if address.version == 6 else socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind((ip, 0))
        return True
    except OSError:
        return False


class SelfAddress:
    """The addresses this gateway listens at (learned from each request's ASGI scope, and from `modelsat serve`'s
    --host/--port), and whether an endpoint URL points at one of them (its host resolved, cached for a minute)."""

    def __init__(self) -> None:
        self.listening: set[tuple[str, int]] = set()
        self._resolved: dict[str, tuple[float, set[str]]] = {}
        self._lock = threading.Lock()

    def learn(self, host: str, port: int) -> None:
        self.listening.add((host, int(port)))

    def _ips(self, host: str) -> set[str]:
        with self._lock:
            hit = self._resolved.get(host)
        if hit is not None and time.monotonic() - hit[0] < 60:
            return hit[1]
        try:
            ips = {info[4][0].split("%")[0] for info in socket.getaddrinfo(host, None)}
        except (OSError, UnicodeError):
            ips = set()
        with self._lock:
            self._resolved[host] = (time.monotonic(), ips)
        return ips

    def why(self, endpoint: str | None) -> str | None:
        """"its endpoint is this gateway itself" where `endpoint` reaches this gateway, else None."""
        if not endpoint or not self.listening:
            return None
        url = urlsplit(endpoint)
        port = url.port or (443 if url.scheme == "https" else 80)
        hosts = [h for h, p in self.listening if p == port]
        if not hosts or not url.hostname:
            return None
        for ip in self._ips(url.hostname):
            for host in hosts:
                if ip == host or (host in ("0.0.0.0", "::", "") and _is_local(ip)):
                    return f"has as its endpoint this gateway itself ({endpoint})"
        return None


@dataclass
class Gateway:
    """What the endpoints share within one worker."""
    router: Router
    lock: threading.Lock
    ranker: Ranker
    capabilities: Capabilities
    store: Store | None
    metrics: Metrics
    fwd: Forwarding
    instance: str
    myself: SelfAddress

    def refuse(self, entry: ZooEntry) -> str | None:
        return self.myself.why(entry.endpoint)

    def prepare(self, body: object) -> Plan:
        return prepare(self.router, body, self.capabilities, refuse=self.refuse,
                       model_of=self.store.model_of if self.store is not None else None)

    async def rank(self, plan: Plan) -> None:
        """Rank what `plan` has left to rank (GatewayError 400 where the router refuses the text)."""
        start = time.perf_counter()
        try:
            plan.rank(await self.ranker.rank(plan.text, plan.to_rank(), plan.cost_weight or 0.0))
            plan.rank_ms = round(1e3 * (time.perf_counter() - start) + (plan.rank_ms or 0.0), 2)
        except ValueError as e:
            raise bad_request(f"could not rank: {e}", "messages") from None

    async def answered(self, plan: Plan, entry: ZooEntry, message: dict | None, tokens, latency: float) -> None:
        """An answer was relayed: metrics, the answer's id for feedback, the conversation's key for its next turn."""
        self.metrics.upstream.labels(entry.name).observe(latency)
        self.metrics.answered(entry, self.router.zoo.entries, tokens)
        if self.store is None:
            return
        keys = []
        if plan.routed and plan.conversation is not None and plan.conversation.startswith("n:"):
            keys.append(plan.conversation)
        if plan.routed and isinstance(message, dict):
            keys.append(history_key([*plan.body["messages"], message]))

        def write() -> None:
            if plan.text:
                self.store.add_answer(plan.answer_id, entry.name, plan.text)
            self.store.remember(keys, entry.name)
        await anyio.to_thread.run_sync(write)


async def _until_disconnect(receive, work):
    """Run `work()`; None where the client disconnects first (`work` is then cancelled: no upstream call or
    fallback goes on for nobody)."""
    box: dict = {}
    async with anyio.create_task_group() as group:
        async def watch() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            group.cancel_scope.cancel()
        group.start_soon(watch)
        try:
            box["result"] = await work()
        except Exception as e:  # noqa: BLE001 (raised below, outside the task group, unwrapped)
            box["error"] = e
        group.cancel_scope.cancel()
    if "error" in box:
        raise box["error"]
    return box.get("result")


def mount(app, gateway: Gateway) -> None:
    """Add `POST /v1/chat/completions` and `GET /v1/models` to the FastAPI `app`."""
    metrics, settings = gateway.metrics, gateway.fwd.settings

    async def chat(raw: bytes, via: str, plan_box: dict, arrived: float) -> Response:
        try:
            body = json.loads(raw, parse_constant=_no_constant)
        except (ValueError, RecursionError) as e:
            raise bad_request(f"the request body is not valid JSON ({str(e)[:200]}); send a JSON object in UTF-8") \
                from None
        plan = plan_box["plan"] = await anyio.to_thread.run_sync(gateway.prepare, body)
        plan.started = arrived               # the deadline runs from the request's arrival
        if plan.conversation and plan.conversation.startswith("h:") or plan.sticky or plan.sticky_lost:
            metrics.conversations.labels("kept" if plan.sticky else "lost" if plan.sticky_lost else "new").inc()
        if plan.sticky_lost:
            logger.info("conversation not kept on its model: %s", plan.sticky_lost,
                        extra={"request_id": REQUEST_ID.get(), "sticky_lost": plan.sticky_lost})
        if plan.routed and not plan.sticky:
            with anyio.move_on_after(max(0.0, plan.started + settings.deadline - time.monotonic())) as timer:
                await gateway.rank(plan)
            if timer.cancelled_caught:
                raise GatewayError(504, f"the request's deadline of {settings.deadline:g} s passed while it waited "
                                   "to be ranked", "upstream_error")
        logger.info("%s request to %s", "routed" if plan.routed else "direct", plan.candidates[0].name,
                    extra={"request_id": REQUEST_ID.get(), "routing": {
                        "model": plan.candidates[0].name, "routed": plan.routed, "sticky": plan.sticky is not None,
                        "needs": plan.needs.capabilities if plan.needs else [], "excluded": len(plan.excluded),
                        "candidates": [e.name for e in plan.candidates[:settings.max_attempts]],
                        "stream": plan.stream, "answer_id": plan.answer_id}})
        return await forward(plan, gateway.fwd, via, REQUEST_ID.get())

    @app.post("/v1/chat/completions", tags=["gateway"])
    async def chat_completions(request: Request):
        """An OpenAI chat completion, routed (`model: "modelsat"`) or forwarded to the named zoo model."""
        arrived = time.monotonic()
        server = request.scope.get("server")
        if server:
            gateway.myself.learn(server[0], server[1])
        plan_box: dict = {}
        try:
            via = [v for v in request.headers.get("x-modelsat-via", "").split(",") if v]
            if gateway.instance in via or len(via) >= MAX_HOPS:
                raise GatewayError(508, f"the request came back to a gateway it went through ({len(via)} hops): a "
                                   "zoo entry's endpoint leads back to a gateway; remove that entry", "loop_detected")
            raw = await request.body()
            response = await _until_disconnect(request.receive, lambda: chat(raw, ",".join([*via, gateway.instance]),
                                                                             plan_box, arrived))
            if response is None:
                status, response = 499, Response(status_code=499)   # nobody reads it: the client has left
            else:
                status = response.status_code
        except GatewayError as e:
            status, response = e.status, JSONResponse(e.body(), e.status, headers=e.headers)
        plan = plan_box.get("plan")
        answering = plan.candidates[0].name if plan is not None and plan.candidates else "none"
        if status < 300:
            answering = unquote(response.headers.get("x-modelsat-model", answering))
        metrics.requests.labels(answering, str(status), str(bool(plan and plan.routed)).lower()).inc()
        return response

    def listing() -> list[dict]:
        entries = gateway.router.zoo.entries
        return [{"id": n, "object": "model", "owned_by": "modelsat zoo", "upstream_model": entries[n].upstream_model}
                for n in with_endpoint(entries)]

    @app.get("/v1/models", tags=["gateway"])
    async def v1_models() -> dict:
        """The models the gateway answers for: "modelsat" (routed) and every zoo model with an endpoint."""
        return {"object": "list", "data": [{"id": ROUTE_MODEL, "object": "model", "owned_by": "modelsat"},
                                           *listing()]}

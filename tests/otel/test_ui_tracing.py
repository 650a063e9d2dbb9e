"""The job browser in telemetry: its requests are HTTP server spans (the ASGI
instrumentation of Starlette, as ``opentelemetry-instrument`` applies it), and an action
taken there is an operation span inside the request's, naming who acted."""

from __future__ import annotations

import httpx
from opentelemetry import trace
from opentelemetry.instrumentation.starlette import StarletteInstrumentor

from queue_core import Queue
from queue_core.ui import TokenAuth, queue_ui
from queue_otel import semconv as sc
from tests.otel.conftest import Telemetry


async def test_an_action_in_the_browser_is_a_span_naming_who_acted(
    telemetry: Telemetry, queue: Queue, redis_url: str
) -> None:
    app = queue_ui(redis=redis_url, auth=TokenAuth("tracing-token", user="ops-token"))
    StarletteInstrumentor.instrument_app(app, tracer_provider=telemetry.tracer_provider)
    transport = httpx.ASGITransport(app=app)
    headers = {"Authorization": "Bearer tracing-token"}
    async with httpx.AsyncClient(
        transport=transport, base_url="http://ui", headers=headers
    ) as http:
        await queue.add("send", {})
        reply = await http.post(f"/q/{queue.name}/bulk", data={"action": "pause", "confirmed": "1"})
        assert reply.status_code == 303
        assert (await http.get("/")).status_code == 200
    await app.state.browser.close()
    assert await queue.is_paused()

    (pause,) = telemetry.spans(f"pause {queue.name}")
    assert pause.attributes is not None
    assert pause.attributes[sc.OPERATION_ACTOR] == "ops-token"
    servers = [s for s in telemetry.spans() if s.kind is trace.SpanKind.SERVER]
    assert [s.name for s in servers] == ["POST /q/{queue:path}/bulk", "GET /"]
    assert pause.parent is not None and pause.parent.span_id == servers[0].context.span_id
    assert pause.context.trace_id == servers[0].context.trace_id

"""Server-sent events that keep a page current: the page's live fragment rendered again
whenever its queues' event streams move, and at least every ``REFRESH_S`` (ages and
sparklines change with time alone). htmx's sse extension swaps each one in place.

Waiting is one blocking ``XREAD`` on the queues' streams (each queue's transitions are
appended there by the scripts that make them); on a Redis Cluster, where one XREAD cannot
span slots, or with events off, the stream simply refreshes on its timer.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

import redis
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from queue_core.keys import QueueKeys
from queue_core.ui import views
from queue_core.ui.render import digest

if TYPE_CHECKING:
    from queue_core.ui.app import Browser

__all__ = ["job_stream", "overview_stream", "queue_stream"]

REFRESH_S = 5.0
MIN_GAP_S = 0.5  # a busy queue's events coalesce into at most two renders a second
BLOCK_MS = 2000
# A stream ends after this long and the browser opens a new one: a page kept in the
# browser's back/forward cache does not hold a stream (and a Redis connection) for ever.
MAX_STREAM_S = 600.0


async def _wait_for_events(browser: Browser, names: list[str], ids: dict[str, str]) -> bool:
    """True once any of the queues' streams has entries past ``ids``, False after a
    while without; ``ids`` advances to what was seen."""
    if not names:
        await asyncio.sleep(REFRESH_S)
        return False
    streams = {QueueKeys(n, browser.prefix)["events"]: ids.get(n, "$") for n in names}
    try:
        reply: Any = await browser.client.xread(streams, count=1000, block=BLOCK_MS)  # type: ignore[arg-type]
    except redis.ResponseError:  # CROSSSLOT on a Cluster: poll instead
        await asyncio.sleep(REFRESH_S / 2)
        return False
    seen = False
    by_key = {QueueKeys(n, browser.prefix)["events"]: n for n in names}
    for key, entries in reply or []:
        name = by_key.get(key.decode() if isinstance(key, bytes) else key)
        if name is not None and entries:
            last = entries[-1][0]
            ids[name] = last.decode() if isinstance(last, bytes) else last
            seen = True
    return seen


async def _positions(browser: Browser, names: list[str]) -> dict[str, str]:
    """Each stream's last id now ("0-0" for none): what was appended while a page renders
    is then seen by the next XREAD, where "$" would skip it."""
    pipe = browser.client.pipeline(transaction=False)
    for name in names:
        pipe.xrevrange(QueueKeys(name, browser.prefix)["events"], count=1)
    ids = {}
    for name, entries in zip(names, await pipe.execute(), strict=True):
        last = entries[0][0] if entries else b"0-0"
        ids[name] = last.decode() if isinstance(last, bytes) else last
    return ids


async def _stream(
    request: Request,
    browser: Browser,
    names: Callable[[], Awaitable[list[str]]],
    render: Callable[[], Awaitable[str]],
) -> AsyncIterator[str]:
    ids = await _positions(browser, await names())
    # The page holds the render whose digest is ``v``: sent again only if it changed
    # (a swap of the same HTML would close what the reader had opened).
    last_html = await render()
    loop = asyncio.get_running_loop()
    last_render = started = loop.time()
    yield "retry: 2000\n\n"
    if digest(last_html) != request.query_params.get("v"):
        yield _event(last_html)
    while not await request.is_disconnected():
        deadline = last_render + REFRESH_S
        watched = await names()
        while loop.time() < deadline and not await request.is_disconnected():
            if await _wait_for_events(browser, watched, ids):
                break
        await asyncio.sleep(max(0.0, last_render + MIN_GAP_S - loop.time()))
        if loop.time() - started > MAX_STREAM_S:
            return  # the browser reconnects; a stream left open by a cached page ends
        html = await render()
        if html != last_html:
            last_html = html
            yield _event(html)
        else:
            yield ": idle\n\n"  # a comment: keeps proxies from closing an idle stream
        last_render = loop.time()


def _event(html: str) -> str:
    return "event: update\n" + "".join(f"data: {line}\n" for line in html.splitlines()) + "\n"


def _response(stream: AsyncIterator[str]) -> Response:
    return StreamingResponse(
        stream,
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


async def overview_stream(browser: Browser, request: Request) -> Response:
    caller = await browser.guard(request)
    if isinstance(caller, Response):
        return caller

    async def render() -> str:
        context = await views.overview_context(browser)
        return browser.fragment(request, "_overview_table.html", context, caller)

    return _response(_stream(request, browser, lambda: views.queue_names(browser), render))


async def queue_stream(browser: Browser, request: Request) -> Response:
    caller = await browser.guard(request)
    if isinstance(caller, Response):
        return caller
    name = request.path_params["queue"]
    query = views.queue_query(request)

    async def render() -> str:
        context = await views.queue_context(browser, name, query)
        return browser.fragment(request, "_queue_live.html", context, caller)

    async def names() -> list[str]:
        return [name]

    return _response(_stream(request, browser, names, render))


async def job_stream(browser: Browser, request: Request) -> Response:
    caller = await browser.guard(request)
    if isinstance(caller, Response):
        return caller
    name, job_id = request.path_params["queue"], request.path_params["job_id"]

    async def render() -> str:
        context = await views.job_context(browser, name, job_id)
        if context is None:
            return "<p class=gone>This job no longer exists.</p>"
        return browser.fragment(request, "_job_live.html", context, caller)

    async def names() -> list[str]:
        return [name]

    return _response(_stream(request, browser, names, render))

"""A reader of a queue's events in a process of its own, for the tests:
``python -m tests.events_reader <redis url> <queue> <completed events to wait for>``.

It prints ``ready`` once its starting position is fixed ("now"), then one line per event,
``<stream id> <event> <job id>``, and exits after the given number of ``completed`` events,
printing ``missed_gaps <n>`` last.
"""

from __future__ import annotations

import asyncio
import sys

from queue_core import QueueEvents


async def main(url: str, queue: str, completed: int) -> None:
    seen = 0
    lines: list[str] = []
    async with QueueEvents(queue, redis=url, block=1.0) as events:
        print("ready", flush=True)
        async for event in events:
            lines.append(f"{event.id} {event.event} {event.job_id}")
            if len(lines) >= 1000:
                print("\n".join(lines), flush=True)
                lines.clear()
            if event.event == "completed":
                seen += 1
                if seen == completed:
                    break
        if lines:
            print("\n".join(lines), flush=True)
        print(f"missed_gaps {events.missed_gaps}", flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))

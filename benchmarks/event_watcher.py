"""The websocket clients of `bin/manage bench_events`, in a process of their own.

    python -m benchmarks.event_watcher --url ws://127.0.0.1:8000/ws/runs/7/ \\
        --origin http://127.0.0.1:8000 --cookie "sessionid=..." --clients 10 --events 20000

Opens `--clients` sockets to a run's stream, as browsers do (session cookie, Origin),
prints `ready` once each has received its first frame (the run so far, which the
benchmark makes non-empty: a page that has loaded), then records when each event
arrives. An event is a token whose text is its index, `[k]`, so each one is told
apart from the others: repeats are counted as duplicates, and the indexes never seen
as lost. The producer writes `emitted` on stdin when it is done; from then on the
clients wait at most `--drain` seconds for what is still on its way. When every
client has every event (or the drain time is up), prints one JSON line: for each
client, the arrival time (`time.time()`) of each index, or null, and its duplicates.

The client is autobahn's, which daphne already depends on. This module imports
nothing from Django, so the process starts quickly and shares no GIL with the server
or the producer.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import sys
import time
from typing import Any
from urllib.parse import urlparse

from autobahn.asyncio.websocket import WebSocketClientFactory, WebSocketClientProtocol

TOKEN = re.compile(rb'#run-reply">\[(\d+)\]</span>')
GRACE_SECONDS = 0.5  # after the last event: time for a late duplicate to show up
GREETING_SECONDS = 60.0  # for every socket to be open and have its first frame


class Recorder:
    def __init__(self, events: int) -> None:
        self.arrived: list[float | None] = [None] * events
        self.received = 0
        self.duplicates = 0
        self.unexpected = 0
        self.done = asyncio.Event()

    def frame(self, payload: bytes) -> None:
        now = time.time()
        for match in TOKEN.finditer(payload):
            index = int(match.group(1))
            if index >= len(self.arrived):
                self.unexpected += 1
            elif self.arrived[index] is None:
                self.arrived[index] = now
                self.received += 1
            else:
                self.duplicates += 1
        if self.received == len(self.arrived):
            self.done.set()


def client_protocol(
    recorder: Recorder, greeted: asyncio.Future[None]
) -> type[WebSocketClientProtocol]:
    """A socket whose `greeted` is done at its first frame (or failed if refused)."""

    class Client(WebSocketClientProtocol):
        def onMessage(self, payload: bytes, isBinary: bool) -> None:
            if not greeted.done():
                greeted.set_result(None)
            recorder.frame(payload)

        def onClose(self, wasClean: bool, code: int, reason: str) -> None:
            if not greeted.done():
                greeted.set_exception(ConnectionError(f"refused: {code} {reason}"))

    return Client


async def run_clients(options: argparse.Namespace) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    url = urlparse(options.url)
    recorders, transports, greetings = [], [], []
    for _ in range(options.clients):
        recorder = Recorder(options.events)
        greeted: asyncio.Future[None] = loop.create_future()
        factory = WebSocketClientFactory(
            options.url, headers={"Cookie": options.cookie}, origin=options.origin
        )
        factory.protocol = client_protocol(recorder, greeted)
        factory.setProtocolOptions(maxMessagePayloadSize=0, maxFramePayloadSize=0)
        transport, _ = await loop.create_connection(factory, url.hostname, url.port)
        recorders.append(recorder)
        transports.append(transport)
        greetings.append(greeted)
    try:
        await asyncio.wait_for(asyncio.gather(*greetings), timeout=GREETING_SECONDS)
    except TimeoutError:
        raise ConnectionError("no first frame (the run so far) on every socket") from None
    say("ready")
    everything = asyncio.ensure_future(asyncio.gather(*(r.done.wait() for r in recorders)))
    emitted = asyncio.ensure_future(loop.run_in_executor(None, sys.stdin.readline))
    await asyncio.wait([everything, emitted], return_when=asyncio.FIRST_COMPLETED)
    if not everything.done():
        # The producer is done: what has not come within the drain time is lost.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(everything, timeout=options.drain)
    await asyncio.sleep(GRACE_SECONDS)
    for transport in transports:
        transport.close()
    return {
        "clients": [
            {"arrived": r.arrived, "duplicates": r.duplicates, "unexpected": r.unexpected}
            for r in recorders
        ]
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--origin", required=True)
    parser.add_argument("--cookie", required=True)
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument(
        "--drain", type=float, default=30.0, help="Seconds to wait after `emitted`."
    )
    options = parser.parse_args(argv)
    try:
        result = asyncio.run(run_clients(options))
    except ConnectionError as exc:
        say(f"failed {exc}")
        sys.exit(1)
    say(json.dumps(result))


def say(line: str) -> None:
    """One line to the benchmark that started this process."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()

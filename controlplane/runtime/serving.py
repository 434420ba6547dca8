"""How the served process is set up, beyond Django's settings (`controlplane.asgi`
applies all three; the benchmarks apply the last to themselves, as the served process).

- Twisted's form parsing off. daphne serves HTTP with Twisted's `http.Request`,
  which parses every POST body whose Content-Type is a form (urlencoded or multipart)
  into `request.args`, and reads that Content-Type with the `email` package on every
  POST, form or not. daphne never reads `request.args`: it hands the raw body to the
  ASGI application, and Django parses forms itself. So the parse is pure cost, on
  every POST: about a tenth of the CPU the gateway spends on a call (measured with
  py-spy under `bin/manage bench_gateway`), and it parses an uploaded multipart body
  twice, Twisted's copy in memory. Twisted has a switch for it
  (`parsePOSTFormSubmission`); daphne does not pass it, so it is turned off here,
  for the requests daphne creates in this process.
- A request's body handed on in one message. daphne reads the body Twisted received
  and hands it to the application 8 KB a message (its `request_buffer_size`), each
  message a turn through a queue: a 32 KB upload took five, about 70 µs of the
  gateway's CPU more than one (measured with `bin/manage bench_gateway --endpoint
  transcriptions --as-large`). daphne's command line has no option for it, so the
  size is set here for the servers made in this process: a body Twisted keeps in
  memory (under 100,000 bytes) goes whole, a larger one (spooled to a file) 1 MiB at
  a time.
- The objects loaded at startup set aside from the garbage collector. Django, the
  apps and Twisted make some hundreds of thousands of objects that live as long as
  the process; every full collection walks all of them again, stalling whichever
  request is running for tens of milliseconds (the gateway's worst latencies under
  `bin/manage bench_gateway` were such stalls, 70-90 ms, and 11-13 ms without them).
"""

from __future__ import annotations

import functools
import gc
from typing import Any

from daphne.http_protocol import WebRequest
from daphne.server import Server

# How much of a request's body daphne hands the application a message.
REQUEST_BODY_CHUNK_BYTES = 1024 * 1024

_original_request_init = WebRequest.__init__
_original_server_init = Server.__init__


@functools.wraps(_original_request_init)
def _init_without_form_parsing(self: WebRequest, *args: Any, **kwargs: Any) -> None:
    kwargs["parsePOSTFormSubmission"] = False
    _original_request_init(self, *args, **kwargs)


def skip_twisted_form_parsing() -> None:
    """Create daphne's requests with Twisted's form parsing off. Idempotent."""
    WebRequest.__init__ = _init_without_form_parsing


@functools.wraps(_original_server_init)
def _init_with_whole_bodies(self: Server, *args: Any, **kwargs: Any) -> None:
    kwargs.setdefault("request_buffer_size", REQUEST_BODY_CHUNK_BYTES)
    _original_server_init(self, *args, **kwargs)


def hand_on_bodies_whole() -> None:
    """Make daphne's servers hand a request's body on in one message (up to
    `REQUEST_BODY_CHUNK_BYTES`), unless told a size. Idempotent."""
    Server.__init__ = _init_with_whole_bodies


def freeze_startup_objects() -> None:
    """Collect what startup left behind, then exempt every object alive now from
    future collections (`gc.freeze`): call once everything is loaded."""
    gc.collect()
    gc.freeze()

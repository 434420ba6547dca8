"""A run's model call on its timeline: one `model_call` event when it starts
streaming (phase started) and one when it ends (phase finished: its duration, tokens
and cost, or how it ended early). Their data is documented in `chat.events`."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.utils import timezone

from chat.events import emit
from chat.models import StreamEvent
from controlplane.money import exact_text
from routing.calls import CallResult


class Outcome:
    OK = "ok"
    STOPPED = "stopped"  # the run stopped mid-stream: what streamed is paid for
    FAILED = "failed"


@dataclass
class ModelCall:
    """One model call of step `step`, timed from when it was asked."""

    run_id: int
    step: int
    started_at: datetime = field(default_factory=timezone.now)
    began: float = field(default_factory=time.perf_counter)
    call_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    model: str = ""

    def started(self, model: str) -> None:
        self.model = model
        emit(
            self.run_id,
            StreamEvent.Type.MODEL_CALL,
            {**self._identity(), "phase": "started", "started_at": self.started_at.isoformat()},
        )

    def finished(self, outcome: str, result: CallResult | None = None, error: str = "") -> None:
        data: dict[str, Any] = {
            **self._identity(),
            "phase": "finished",
            "outcome": outcome,
            "duration_ms": int((time.perf_counter() - self.began) * 1000),
            "error": error,
        }
        if result is not None:
            usage = result.completion.usage
            data |= {
                "model": result.model.label,
                "input_tokens": usage.prompt_tokens,
                "output_tokens": usage.completion_tokens,
                "cost": exact_text(result.cost),
            }
        emit(self.run_id, StreamEvent.Type.MODEL_CALL, data)

    def _identity(self) -> dict[str, Any]:
        return {"call_id": self.call_id, "step": self.step, "model": self.model}

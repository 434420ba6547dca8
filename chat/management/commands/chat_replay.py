from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from chat.models import Run, StreamEvent


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)


def _meter(name: str, values: dict[str, Any]) -> str:
    used, limit = values.get("used"), values.get("limit")
    return f"{name} {used}/{limit} ({values.get('percent')}%, {values.get('state')})"


def _counter(name: str, values: dict[str, Any]) -> str:
    return f"{name} {values.get('count')}/{values.get('threshold')}"


def summary(event_type: str, data: dict[str, Any]) -> str:
    """One line for a person reading the event log."""
    if event_type == StreamEvent.Type.STATUS:
        return f"{data.get('status')}: {data.get('detail', '')}"
    if event_type == StreamEvent.Type.TOKEN:
        return _json(data.get("text", ""))
    if event_type == StreamEvent.Type.TOOL_START:
        where = f"step {data.get('step')}, execution {data.get('execution_id')}"
        return f"{data.get('tool')} {_json(data.get('arguments'))} ({where})"
    if event_type == StreamEvent.Type.TOOL_RESULT:
        line = f"{data.get('tool')} {data.get('outcome')} in {data.get('duration_ms')} ms"
        if data.get("error"):
            return f"{line}: {data['error']} (fingerprint {str(data.get('fingerprint'))[:12]})"
        return f"{line}: {_json(data.get('result'))[:200]}"
    if event_type == StreamEvent.Type.BUDGET:
        meters = [_meter(name, data.get(name) or {}) for name in ("steps", "wall_clock", "cost")]
        retries = data.get("retries") or {}
        if retries:
            meters.append("retries " + ", ".join(f"{fp[:12]} x{n}" for fp, n in retries.items()))
        return " · ".join(meters)
    if event_type == StreamEvent.Type.GUARDRAILS:
        names = ("loop", "no_progress", "repeated_failure")
        return " · ".join(_counter(name, data.get(name) or {}) for name in names)
    if event_type == StreamEvent.Type.APPROVAL:
        what = data.get("tool") or "model call"
        arguments = _json(data.get("arguments"))
        return f"#{data.get('approval_id')} for {what} {arguments}: {data.get('reason', '')}"
    if event_type == StreamEvent.Type.STOP_REASON:
        action = (data.get("next_action") or {}).get("label", "")
        said = f"{data.get('reason')} ({data.get('label')}). {data.get('suggestion', '')}"
        return f"{said} Next: {action}"
    if event_type == StreamEvent.Type.ERROR:
        return str(data.get("message", ""))
    if event_type == StreamEvent.Type.MODEL_CALL:
        return _model_call(data)
    return _json(data)


def _model_call(data: dict[str, Any]) -> str:
    line = f"step {data.get('step')} {data.get('model')} {data.get('phase')}"
    if data.get("phase") != "finished":
        return f"{line} at {data.get('started_at')}"
    line = f"{line} {data.get('outcome')} in {data.get('duration_ms')} ms"
    if data.get("input_tokens") is not None:
        line += f", {data['input_tokens']} in / {data.get('output_tokens')} out tokens"
        line += f", cost {data.get('cost')}"
    return f"{line}: {data['error']}" if data.get("error") else line


def event_line(event: StreamEvent) -> str:
    at = timezone.localtime(event.at).strftime("%H:%M:%S.%f")[:-3]
    return f"#{event.seq:<5} {at}  {event.type:<12} {summary(event.type, event.data or {})}"


class Command(BaseCommand):
    help = "Print a chat run's event log, in order (the same events the page shows)."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("run", type=int, help="The run's id.")
        parser.add_argument("--after", type=int, default=0, help="Only events after this seq.")
        parser.add_argument("--json", action="store_true", help="One JSON object per line.")

    def handle(self, *args: Any, **options: Any) -> None:
        run = Run.objects.filter(pk=options["run"]).first()
        if run is None:
            raise CommandError(f"There is no run #{options['run']}.")
        events = run.events.filter(seq__gt=options["after"]).order_by("seq")
        for event in events.iterator():
            if options["json"]:
                self.stdout.write(
                    _json(
                        {
                            "seq": event.seq,
                            "at": event.at.isoformat(),
                            "type": event.type,
                            "data": event.data,
                        }
                    )
                )
            else:
                self.stdout.write(event_line(event))
        if not options["json"]:
            reason = f", stop reason {run.stop_reason}" if run.stop_reason else ""
            self.stdout.write(f"Run #{run.pk} ({run.mode}): {run.status}{reason}.")

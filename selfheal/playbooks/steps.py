"""The playbook step language: at most ten steps, each declaring one safe action.

A playbook's steps are methods marked with `@step(title, action=...)`. Two rules
hold at class definition (and again at registration), so a playbook that breaks
them cannot exist: no more than `MAX_STEPS` steps, and every action is in
`SAFE_ACTIONS`. Nothing in `SAFE_ACTIONS` destroys data: a reset task can be put
back, a created task can be cancelled, an approval request only asks. The executor
(`selfheal.playbooks.executor`) enforces at run time that a step does only what it
declared.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

MAX_STEPS = 10

# The only things a playbook step may do. None of them destroys anything.
SAFE_ACTIONS: dict[str, str] = {
    "read": "Reads and measures; changes nothing.",
    "reset_task_to_pending": "Moves a blocked or stuck task back to pending (rollback undoes it).",
    "create_fix_task": "Opens a task to fix an error pattern (rollback cancels it).",
    "request_approval": "Asks a person to approve work that is over a cap.",
}


class PlaybookError(Exception):
    """Something a person should read: the message says what and why."""


class PlaybookDefinitionError(PlaybookError):
    """A playbook that breaks the rules (too many steps, an action not allowed)."""


@dataclass(frozen=True)
class Step:
    name: str
    title: str
    action: str


def step[StepMethod: Callable[..., Any]](
    title: str, *, action: str
) -> Callable[[StepMethod], StepMethod]:
    """Mark a playbook method as a step that takes only `action`."""
    _check_action(action, where=title)

    def mark(method: StepMethod) -> StepMethod:
        method._playbook_step = Step(name=method.__name__, title=title, action=action)  # type: ignore[attr-defined]
        return method

    return mark


def _check_action(action: str, *, where: str) -> None:
    if action not in SAFE_ACTIONS:
        raise PlaybookDefinitionError(
            f"{where}: action '{action}' is not a safe playbook action "
            f"(allowed: {', '.join(sorted(SAFE_ACTIONS))})."
        )


def validate_steps(name: str, steps: Iterable[Step]) -> tuple[Step, ...]:
    steps = tuple(steps)
    if len(steps) > MAX_STEPS:
        raise PlaybookDefinitionError(
            f"Playbook '{name}' has {len(steps)} steps; a playbook has at most {MAX_STEPS}."
        )
    for each in steps:
        _check_action(each.action, where=f"Playbook '{name}', step '{each.name}'")
    return steps


def collect_steps(cls: type) -> tuple[Step, ...]:
    """The steps a playbook class marked, its own and inherited, in definition order;
    a step overridden by a method that is not a step is gone."""
    collected: dict[str, Step] = {}
    for klass in reversed(cls.__mro__):
        for attribute, value in vars(klass).items():
            marked = getattr(value, "_playbook_step", None)
            if isinstance(marked, Step):
                collected[attribute] = marked
            elif attribute in collected:
                del collected[attribute]  # overridden without being a step
    return validate_steps(getattr(cls, "name", "") or cls.__name__, collected.values())

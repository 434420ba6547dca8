"""Home's websocket: the cards an event touched, re-rendered and sent as HTML that
htmx swaps out of band. It listens to Home's own group and to the groups the cards
registered (the engine's, the log monitor's...), so those producers need not know
Home exists. Bursts are coalesced: at most one render every `RENDER_INTERVAL`
seconds, covering every card touched meanwhile. Cards whose content changes with time
alone (a lease running out makes a task stuck; the last hour moves on) are rendered
again every `catch_up_seconds` besides."""

from __future__ import annotations

from typing import Any

from controlplane.consumers import PacedRenderConsumer
from controlplane.home.cards import (
    aging_cards,
    cards_touched,
    home_cards,
    live_groups,
    render_cards,
)


class HomeConsumer(PacedRenderConsumer):
    catch_up_seconds = 30.0

    def page_groups(self) -> list[str]:
        return live_groups()

    def touched(self, event_type: str) -> set[str]:
        """The cards an event touches: none for a type Home does not show (the groups
        are other pages' too)."""
        return cards_touched(event_type)

    def catch_up(self) -> set[str]:
        return aging_cards()

    def render(self, changed: set[Any]) -> list[str]:
        names = [card.name for card in home_cards() if card.name in changed]
        return [render_cards(names, self.scope["user"])]

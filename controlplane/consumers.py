"""Websocket consumers of the core: the base that refuses outsiders, and Home."""

from __future__ import annotations

from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.template.loader import render_to_string

from controlplane.live import HOME_GROUP
from controlplane.tiers import Tier, tier_of

# Close codes in the application range: the browser can tell "log in" from "forbidden".
CLOSE_UNAUTHENTICATED = 4401
CLOSE_FORBIDDEN = 4403


class StaffConsumer(AsyncWebsocketConsumer):
    """Accepts only staff (a tier of at least `minimum_tier`); joins `groups_for()`."""

    minimum_tier = Tier.OBSERVER

    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=CLOSE_UNAUTHENTICATED)
            return
        tier = await database_sync_to_async(tier_of)(user)
        if tier < self.minimum_tier:
            await self.close(code=CLOSE_FORBIDDEN)
            return
        self.joined = self.groups_for()
        for group in self.joined:
            await self.channel_layer.group_add(group, self.channel_name)
        await self.accept()

    async def disconnect(self, code: int) -> None:
        for group in getattr(self, "joined", []):
            await self.channel_layer.group_discard(group, self.channel_name)

    def groups_for(self) -> list[str]:
        return []


class HomeConsumer(StaffConsumer):
    def groups_for(self) -> list[str]:
        return [HOME_GROUP]

    async def approval_changed(self, event: dict[str, Any]) -> None:
        html = await database_sync_to_async(_render_pending_approvals)(self.scope["user"])
        await self.send(text_data=html)


def _render_pending_approvals(user: Any) -> str:
    from controlplane.dashboard import pending_approvals_context

    return render_to_string(
        "controlplane/partials/pending_approvals.html",
        {**pending_approvals_context(user), "oob": True},
    )

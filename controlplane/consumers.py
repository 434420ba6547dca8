"""Websocket consumers of the core: the base that refuses outsiders (Home's own is
`controlplane.home.consumer`), and the pending-approvals fragment as a socket sends it."""

from __future__ import annotations

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.contrib.auth.context_processors import PermWrapper
from django.template.loader import render_to_string

from controlplane.tiers import StaffUser, is_staff_member

# Close codes in the application range: the browser can tell "log in" from "forbidden".
CLOSE_UNAUTHENTICATED = 4401
CLOSE_FORBIDDEN = 4403


class StaffConsumer(AsyncWebsocketConsumer):
    """Accepts only staff (the same check as every staff page); joins `groups_for()`."""

    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=CLOSE_UNAUTHENTICATED)
            return
        if not await database_sync_to_async(self.admits)(user):
            await self.close(code=CLOSE_FORBIDDEN)
            return
        self.joined = self.groups_for()
        for group in self.joined:
            await self.channel_layer.group_add(group, self.channel_name)
        await self.accept()

    async def disconnect(self, code: int) -> None:
        for group in getattr(self, "joined", []):
            await self.channel_layer.group_discard(group, self.channel_name)

    def admits(self, user: StaffUser) -> bool:
        """Whether this person may watch (in the database thread, so a subclass asks
        what else it needs, `user.has_perm(...)`, in the same hop)."""
        return is_staff_member(user)

    def groups_for(self) -> list[str]:
        return []


def _render_pending_approvals(user: StaffUser) -> str:
    from controlplane.dashboard import pending_approvals_context

    # Rendered without a request: `perms` as the context processor gives a page.
    return render_to_string(
        "controlplane/partials/pending_approvals.html",
        {**pending_approvals_context(user), "perms": PermWrapper(user), "oob": True},
    )

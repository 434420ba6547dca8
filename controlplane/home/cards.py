"""Home's cards, registered by the apps that own their data (from `AppConfig.ready()`:
the core never imports an app above it, DESIGN.md) and by the core for its own:

    register_home_card("runs", "chat/partials/home_runs.html", runs_context,
                       order=20, events=("home.runs",))

A card is one template fragment (its own `<section id>`, swapped out of band when
sent live) and one context function of the viewer. The page renders every card and
the websocket (`controlplane.home.consumer`) re-renders those an event touched, with
the same fragment and function, so a live card is the card a reload shows. `events`
are the live event types that change the card, `groups` the channel-layer groups
they are published to besides Home's own.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from django.contrib.auth.context_processors import PermWrapper
from django.http import HttpRequest
from django.template.loader import render_to_string

from controlplane.live import HOME_GROUP
from controlplane.tiers import StaffUser

log = logging.getLogger(__name__)

CardContext = Callable[[StaffUser], dict[str, Any]]
UNREADABLE = "controlplane/partials/home/unreadable.html"


@dataclass
class HomeCard:
    name: str
    template: str
    context: CardContext
    order: int
    events: set[str] = field(default_factory=set)
    groups: set[str] = field(default_factory=set)
    ages: bool = False  # its content changes with time alone (a lease runs out)


_cards: dict[str, HomeCard] = {}
# Events and groups added to a card by another app, kept apart from the card so that
# they hold whichever app's ready() runs first.
_more_events: dict[str, set[str]] = {}
_more_groups: dict[str, set[str]] = {}


def register_home_card(
    name: str,
    template: str,
    context: CardContext,
    *,
    order: int = 100,
    events: Iterable[str] = (),
    groups: Iterable[str] = (),
    ages: bool = False,
) -> None:
    """Show `template` rendered with `context(viewer)` on Home, in `order`, re-rendered
    live on `events`, and every little while too when it `ages` (registering a name
    again replaces it)."""
    _cards[name] = HomeCard(name, template, context, order, set(events), set(groups), ages)


def refresh_on(name: str, *, events: Iterable[str], groups: Iterable[str] = ()) -> None:
    """Re-render card `name` on more events too (an app whose state the card judges)."""
    _more_events.setdefault(name, set()).update(events)
    _more_groups.setdefault(name, set()).update(groups)


def for_everyone(context: Callable[[], dict[str, Any]]) -> CardContext:
    """A card whose content does not depend on who looks."""
    return lambda user: context()


def home_cards() -> list[HomeCard]:
    return sorted(_cards.values(), key=lambda card: (card.order, card.name))


def aging_cards() -> set[str]:
    return {card.name for card in _cards.values() if card.ages}


def cards_touched(event_type: str) -> set[str]:
    return {
        card.name
        for card in _cards.values()
        if event_type in card.events or event_type in _more_events.get(card.name, ())
    }


def live_groups() -> list[str]:
    """Home's group and every group a card's events come from."""
    groups = {HOME_GROUP}.union(*(card.groups for card in _cards.values()), *_more_groups.values())
    return sorted(groups)


def render_card(
    card: HomeCard, user: StaffUser, *, request: HttpRequest | None = None, oob: bool = False
) -> str:
    """One card's fragment; a card whose data cannot be read is logged and said to be
    unreadable rather than taking Home down with it. Rendered without a request (on
    the socket), `perms` and `user` are given as the context processors give a page."""
    try:
        context = card.context(user)
        if request is None:
            context.update(perms=PermWrapper(user), user=user)
        return render_to_string(card.template, {**context, "oob": oob}, request=request)
    except Exception:
        log.exception("Home's %s card could not be rendered", card.name)
        return render_to_string(UNREADABLE, {"card": card.name}) if not oob else ""


def render_page_cards(request: HttpRequest, user: StaffUser) -> list[str]:
    """Every card, in order, for the page."""
    return [render_card(card, user, request=request) for card in home_cards()]


def render_cards(names: Iterable[str], user: StaffUser) -> str:
    """The cards named, in the page's order, each marked to be swapped out of band."""
    wanted = set(names)
    return "\n".join(
        render_card(card, user, oob=True) for card in home_cards() if card.name in wanted
    )

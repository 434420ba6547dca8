"""What a call is measured in before it is made, from its request: the units besides
tokens a call of its kind is priced by (`UNIT_PRICES`). Routing leaves out the models
that have no price for them, the reservation holds their estimate, and a call the
provider does not report them for is priced at them after (`CallUnits.fill`).

A chat is measured from its messages' content parts: each image part is an image;
an audio part (`input_audio`) and a video part sent inline (a data URL) are as long
as their file's header says; a video part by URL counts as
`GATEWAY_VIDEO_SECONDS_ASSUMED` seconds (its length cannot be read without fetching
it), which the call's log row says.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any

from django.conf import settings

from controlplane.money import ZERO
from routing.media import UnreadableMedia, decode_base64, duration_seconds, is_data_url
from routing.models.catalog import UNIT_PRICES, CallKind
from routing.providers.base import Usage

IMAGE_PARTS = frozenset({"image_url", "input_image", "image"})
AUDIO_PARTS = frozenset({"input_audio"})
VIDEO_PARTS = frozenset({"video_url", "input_video"})


class UnmeasurableRequest(ValueError):
    """A part of the request whose units cannot be measured; `param` names it."""

    def __init__(self, message: str, *, param: str) -> None:
        super().__init__(message)
        self.param = param


@dataclass(frozen=True)
class CallUnits:
    kind: str = CallKind.CHAT
    images: int = 0
    audio_seconds: Decimal = ZERO
    video_seconds: Decimal = ZERO
    characters: int = 0
    # The request's field that first carries each unit (for an error naming it).
    fields: Mapping[str, str] = field(default_factory=dict)
    # What was assumed rather than measured, for the call's log row.
    assumed: str = ""

    def fill(self, usage: Usage) -> Usage:
        """`usage` with the units its provider did not report taken from the request."""
        missing = {
            unit: getattr(self, unit)
            for unit in UNIT_PRICES
            if not getattr(usage, unit) and getattr(self, unit)
        }
        return replace(usage, **missing) if missing else usage

    def field_of(self, price: str) -> str | None:
        """The request field carrying the unit `price` is the price of."""
        for unit, unit_price in UNIT_PRICES.items():
            if unit_price == price:
                return self.fields.get(unit)
        return None


NO_UNITS = CallUnits()


def chat_units(messages: Sequence[Any]) -> CallUnits:
    """The images, audio and video seconds a chat's messages carry; raises
    `UnmeasurableRequest` for an audio or inline video part that is no readable file."""
    images, audio, video = 0, ZERO, ZERO
    fields: dict[str, str] = {}
    assumed: list[str] = []
    for index, message in enumerate(messages):
        content = message.get("content") if isinstance(message, Mapping) else None
        if not isinstance(content, list):
            continue
        for number, part in enumerate(content):
            kind = part.get("type") if isinstance(part, Mapping) else None
            where = f"messages[{index}].content[{number}]"
            if kind in IMAGE_PARTS:
                images += 1
                fields.setdefault("images", where)
            elif kind in AUDIO_PARTS:
                audio += _audio_seconds(part, where)
                fields.setdefault("audio_seconds", where)
            elif kind in VIDEO_PARTS:
                seconds, guessed = _video_seconds(part, where)
                video += seconds
                fields.setdefault("video_seconds", where)
                if guessed:
                    assumed.append(f"{where}: a video by URL counted as {seconds} seconds")
    if not (images or audio or video):
        return NO_UNITS
    return CallUnits(
        CallKind.CHAT,
        images=images,
        audio_seconds=audio,
        video_seconds=video,
        fields=fields,
        assumed="; ".join(assumed),
    )


def _audio_seconds(part: Mapping[str, Any], where: str) -> Decimal:
    audio = part.get("input_audio")
    data = audio.get("data") if isinstance(audio, Mapping) else None
    if not isinstance(data, str):
        raise UnmeasurableRequest(
            f"'{where}.input_audio.data' must be the audio file in base64.",
            param=f"{where}.input_audio.data",
        )
    try:
        return duration_seconds(decode_base64(data))
    except UnreadableMedia as exc:
        raise UnmeasurableRequest(
            f"'{where}.input_audio.data' is not a readable audio file: {exc}.",
            param=f"{where}.input_audio.data",
        ) from None


def _video_seconds(part: Mapping[str, Any], where: str) -> tuple[Decimal, bool]:
    """The video's seconds, and whether they were assumed (a video by URL)."""
    video = part.get(str(part.get("type"))) or part.get("video_url")
    url = video.get("url") if isinstance(video, Mapping) else video
    if not isinstance(url, str) or not url:
        raise UnmeasurableRequest(
            f"'{where}' must give the video's url (or a data URL).", param=where
        )
    if not is_data_url(url):
        return Decimal(settings.GATEWAY_VIDEO_SECONDS_ASSUMED), True
    try:
        return duration_seconds(decode_base64(url)), False
    except UnreadableMedia as exc:
        raise UnmeasurableRequest(
            f"'{where}' is not a readable video file: {exc}.", param=where
        ) from None

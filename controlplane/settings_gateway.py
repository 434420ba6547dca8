"""Settings of the gateway's endpoints beyond chat (embeddings, audio, media in
prompts). Read from the environment like the rest; `controlplane.settings` takes them
in whole. Every variable is listed with its default in `.env.example`."""

from __future__ import annotations

from controlplane.environment import env

# Seconds of video assumed for a video part given by URL (its duration cannot be read
# without fetching it): what the call reserves, and is priced at unless the provider
# reports its cost. A video sent inline (a data URL) is measured from its header.
GATEWAY_VIDEO_SECONDS_ASSUMED = max(1, env.int("GATEWAY_VIDEO_SECONDS_ASSUMED", default=600))
# The largest body `/v1/audio/transcriptions` takes (the audio file and its fields),
# in bytes: 25 MB, as OpenAI's. A larger one is refused with a 413 naming the limit.
GATEWAY_TRANSCRIPTION_MAX_BYTES = env.int(
    "GATEWAY_TRANSCRIPTION_MAX_BYTES", default=25 * 1024 * 1024
)

"""Settings of the chat bots (Telegram, Discord): account linking, the commands'
rate limit, how Telegram's updates are fetched, and how old a Discord interaction
may be. Read from the environment like the rest; `controlplane.settings` takes them
in whole. Every variable is listed with its default in `.env.example`."""

from __future__ import annotations

from controlplane.environment import env

# How long a link code from the profile page may be sent to a bot (`/link CODE`).
CHATOPS_LINK_CODE_MINUTES = max(1, env.int("CHATOPS_LINK_CODE_MINUTES", default=10))
# Commands one chat account may send a minute (then a single "slow down" and silence).
CHATOPS_COMMANDS_PER_MINUTE = max(1, env.int("CHATOPS_COMMANDS_PER_MINUTE", default=20))
# Long polling (integrations without a public webhook): how long Telegram holds each
# getUpdates open, and whether the embedded mode polls in its own process (scale mode
# runs `bin/manage telegram_poll` instead).
TELEGRAM_POLL_TIMEOUT_SECONDS = max(0, env.int("TELEGRAM_POLL_TIMEOUT_SECONDS", default=25))
TELEGRAM_POLL_IN_PROCESS = env.bool("TELEGRAM_POLL_IN_PROCESS", default=True)
# Handled updates are remembered this long (Telegram keeps unconfirmed ones for 24 h).
TELEGRAM_UPDATE_RECORD_DAYS = max(2, env.int("TELEGRAM_UPDATE_RECORD_DAYS", default=7))
# Discord interactions: a request signed longer ago than this (or later, by a clock
# ahead) is refused, and each interaction id is accepted once within it, so a
# captured request cannot be replayed.
DISCORD_INTERACTION_MAX_AGE_SECONDS = max(
    30, env.int("DISCORD_INTERACTION_MAX_AGE_SECONDS", default=300)
)
# Approval messages in Telegram and Discord chats are edited when the approval is
# decided, expires or is withdrawn: at most one edit per chat this often (Telegram
# allows about one message a second per chat); a held edit is made by the next pass.
TELEGRAM_EDIT_INTERVAL_SECONDS = max(0, env.int("TELEGRAM_EDIT_INTERVAL_SECONDS", default=1))
# The record of each bot message sent (notifications, approval requests; Admin →
# Chat messages) is kept this many days, then forgotten (hourly), except while its
# approval is pending or its edit is due.
CHATOPS_MESSAGE_RECORD_DAYS = max(1, env.int("CHATOPS_MESSAGE_RECORD_DAYS", default=30))
# A run started from a chat (`/run`) is shown in one bot message, refreshed this often
# in seconds (each message is edited at most once a second, within Telegram's limits).
CHATOPS_RUN_MESSAGE_SECONDS = max(1.0, env.float("CHATOPS_RUN_MESSAGE_SECONDS", default=2.0))

"""Slash commands and buttons from Discord, through the same dispatcher as Telegram:
`/link` with a profile page's code links the Discord user (audited) and `/unlink`
unlinks; an account not linked is refused politely (ephemerally); unknown commands
and huge input are answered within Discord's 2000 characters, user text escaped for
its markdown; a button reaches its handler only for a linked staff member, with the
presser's Discord id and the message's id."""

from __future__ import annotations

import re

import pytest
from django.test import Client
from django.utils.html import format_html

from controlplane import chat_commands
from controlplane.chat_commands import (
    REFUSAL,
    Button,
    ButtonPress,
    Reply,
    register_button_handler,
    register_command,
)
from controlplane.discord_replies import as_discord_markdown, escape_markdown
from controlplane.models import AuditEvent, ChatAccount
from tests.controlplane.discord_bots import (
    ALICE,
    DM_CHANNEL,
    MALLORY,
    SERVER_CHANNEL,
    app,
    button_press,
    command,
    discord,
    linked,
    post_interaction,
    signing_key,
)

__all__ = ["app", "discord", "signing_key"]  # fixtures

pytestmark = pytest.mark.django_db
CODE = re.compile(r"/link ([A-Z2-9]{4}-[A-Z2-9]{4})")
EPHEMERAL = 64


@pytest.fixture(autouse=True)
def _own_registries(monkeypatch):
    # Commands and handlers a test registers go with it.
    monkeypatch.setattr(chat_commands, "_commands", dict(chat_commands._commands))
    monkeypatch.setattr(chat_commands, "_button_handlers", dict(chat_commands._button_handlers))


def _code_from_profile(client: Client, user) -> str:
    client.force_login(user)
    found = CODE.search(client.post("/accounts/profile/link-code/").content.decode())
    assert found is not None
    client.logout()
    return found.group(1)


def _send(client, app, signing_key, interaction) -> dict:
    """The interaction's response (type and data), which must be a 200."""
    response = post_interaction(client, app, signing_key, interaction)
    assert response.status_code == 200, response.content
    answer = response.json()
    assert len(answer["data"]["content"]) <= 2000
    return answer


def _unescaped(markdown: str) -> str:
    return re.sub(r"\\(.)", r"\1", markdown)


# Linking


def test_link_with_a_profile_code_links_the_discord_user_and_is_audited(
    client, app, signing_key, operator
):
    code = _code_from_profile(client, operator)

    answer = _send(client, app, signing_key, command("link", code))

    assert answer["type"] == 4
    assert _unescaped(answer["data"]["content"]).startswith(
        "Linked: this chat account now acts for oscar-operator"
    )
    account = ChatAccount.objects.get()
    assert (account.user, account.platform, account.platform_user_id, account.chat_id) == (
        operator,
        "discord",
        ALICE,
        DM_CHANNEL,
    )
    assert account.display_name == "Alice"
    event = AuditEvent.objects.get(action="chat_account.linked")
    assert event.actor == operator
    assert event.after["platform"] == "discord"
    assert event.after["platform_user_id"] == ALICE
    # Linked, its commands run, and in a DM they are ordinary messages.
    help_answer = _send(client, app, signing_key, command("help"))
    assert _unescaped(help_answer["data"]["content"]).startswith("You act as oscar-operator.")
    assert "flags" not in help_answer["data"]


def test_a_used_code_is_refused_and_says_why(client, app, signing_key, operator):
    code = _code_from_profile(client, operator)
    _send(client, app, signing_key, command("link", code))

    answer = _send(client, app, signing_key, command("link", code, user_id=MALLORY))

    assert _unescaped(answer["data"]["content"]).startswith("That code was already used.")
    assert answer["data"]["flags"] == EPHEMERAL
    assert ChatAccount.objects.get().platform_user_id == ALICE


def test_link_in_a_server_channel_is_answered_only_to_the_sender(
    client, app, signing_key, observer
):
    code = _code_from_profile(client, observer)

    answer = _send(client, app, signing_key, command("link", code, in_server=True))

    assert answer["data"]["flags"] == EPHEMERAL
    account = ChatAccount.objects.get()
    assert (account.platform_user_id, account.chat_id) == (ALICE, SERVER_CHANNEL)


def test_unlink_from_discord_unlinks_and_is_audited(client, app, signing_key, owner):
    linked(app, owner)

    answer = _send(client, app, signing_key, command("unlink"))

    assert _unescaped(answer["data"]["content"]).startswith("Unlinked:")
    assert not ChatAccount.objects.exists()
    event = AuditEvent.objects.get(action="chat_account.unlinked")
    assert (event.actor, event.after) == (owner, {"via": "chat"})


def test_the_profile_page_lists_discord_links_with_an_unlink_button(client, app, owner):
    account = linked(app, owner)
    client.force_login(owner)

    page = client.get("/accounts/profile/").content.decode()

    assert "Discord Alice" in page
    assert f'action="/accounts/profile/chat-accounts/{account.pk}/unlink/"' in page
    assert "ops-discord (Discord)" in page


def test_the_same_discord_user_is_linked_per_application(client, app, signing_key, owner):
    # Telegram's and Discord's ids are per bot: a link through one is not through another.
    linked(app, owner)

    answer = _send(client, app, signing_key, command("help", user_id=MALLORY))

    assert answer["data"]["content"] == escape_markdown(REFUSAL)


# Refusals and odd input


def test_an_account_not_linked_gets_a_polite_ephemeral_refusal_and_nothing_else(
    client, app, signing_key, owner
):
    linked(app, owner)

    for name in ("help", "unlink", "status", "nonsense"):
        answer = _send(client, app, signing_key, command(name, user_id=MALLORY))
        assert answer["data"]["content"] == escape_markdown(REFUSAL)
        assert answer["data"]["flags"] == EPHEMERAL
        assert "components" not in answer["data"]

    assert ChatAccount.objects.get().user == owner
    assert not AuditEvent.objects.filter(action="chat_account.unlinked").exists()


def test_a_member_who_left_the_tiers_is_refused_at_once(client, app, signing_key, operator):
    linked(app, operator)
    register_button_handler("thing", lambda press: pytest.fail("must not be called"))
    operator.groups.clear()

    answer = _send(client, app, signing_key, command("help"))
    pressed = _send(client, app, signing_key, button_press("thing:1", "94"))

    assert answer["data"]["content"] == escape_markdown(REFUSAL)
    assert answer["data"]["flags"] == EPHEMERAL
    assert "not linked to a staff account" in pressed["data"]["content"]


def test_an_unknown_command_gets_the_short_help(client, app, signing_key, owner):
    linked(app, owner)

    answer = _send(client, app, signing_key, command("frobnicate", "now"))

    assert _unescaped(answer["data"]["content"]).startswith("I do not know /frobnicate. Commands:")


def test_huge_input_is_answered_within_discords_limit(client, app, signing_key, owner):
    linked(app, owner)
    register_command("echo", lambda request: f"You said: {request.args}", summary="Echo")

    answer = _send(client, app, signing_key, command("echo", "*<@1>`" * 20_000))

    content = answer["data"]["content"]
    assert len(content) <= 2000
    assert content.startswith(r"You said: \*\<\@1>\`")
    assert content.endswith("… (cut: too long for a chat message)")


def test_user_text_cannot_break_the_markdown_or_ping_anyone(client, app, signing_key, owner):
    linked(app, owner)
    register_command("echo", lambda request: f"You said: {request.args}", summary="Echo")
    register_command(
        "bold", lambda request: format_html("<b>{}</b> ok", request.args), summary="Bold"
    )

    echoed = _send(client, app, signing_key, command("echo", "**x** @everyone ||spoiler||"))
    bold = _send(client, app, signing_key, command("bold", "a*b_c"))

    assert echoed["data"]["content"] == r"You said: \*\*x\*\* \@everyone \|\|spoiler\|\|"
    assert echoed["data"]["allowed_mentions"] == {"parse": []}
    assert bold["data"]["content"] == r"**a\*b\_c** ok"


def test_a_failing_command_is_said_and_takes_back_its_writes(client, app, signing_key, owner):
    linked(app, owner)

    def broken(request):
        ChatAccount.objects.all().delete()
        raise RuntimeError("boom")

    register_command("broken", broken, summary="Breaks")

    answer = _send(client, app, signing_key, command("broken"))

    assert "That command failed" in answer["data"]["content"]
    assert answer["data"]["flags"] == EPHEMERAL
    assert ChatAccount.objects.exists()


def test_past_the_rate_limit_discord_still_gets_an_answer(
    client, app, signing_key, owner, settings
):
    settings.CHATOPS_COMMANDS_PER_MINUTE = 2
    linked(app, owner)

    answers = [_send(client, app, signing_key, command("help")) for _ in range(4)]

    assert [a["data"].get("flags") for a in answers] == [None, None, EPHEMERAL, EPHEMERAL]
    assert _unescaped(answers[3]["data"]["content"]).startswith("Too many messages")


# Markup translated


def test_telegram_markup_becomes_discord_markdown():
    markup = format_html(
        "<b>{}</b> <i>run</i> <code>{}</code>\n<pre>{}</pre> <a href='{}'>{}</a>",
        "Run #7",
        "a`b",
        "x < y",
        "https://ops.example.com/runs/7/",
        "[page]",
    )

    assert as_discord_markdown(markup) == (
        "**Run #7** *run* `a\u02cbb`\n```\nx < y\n``` [\\[page\\]](https://ops.example.com/runs/7/)"
    )


# Buttons


def test_a_reply_with_buttons_becomes_components_and_a_press_reaches_its_handler(
    client, app, signing_key, owner
):
    linked(app, owner)
    pressed: list[ButtonPress] = []

    def handler(press: ButtonPress) -> str:
        pressed.append(press)
        return "Done."

    register_button_handler("thing", handler)
    register_command(
        "ask",
        lambda request: Reply(
            "Sure?", ((Button("Yes", "thing:1:yes"), Button("No", "thing:1:no")),)
        ),
        summary="Ask",
    )

    asked = _send(client, app, signing_key, command("ask"))
    answer = _send(client, app, signing_key, button_press("thing:1:yes", "9100910091009100"))

    assert asked["data"]["components"] == [
        {
            "type": 1,
            "components": [
                {"type": 2, "style": 1, "label": "Yes", "custom_id": "thing:1:yes"},
                {"type": 2, "style": 1, "label": "No", "custom_id": "thing:1:no"},
            ],
        }
    ]
    press = pressed[0]
    assert (press.user, press.data, press.message_id) == (owner, "thing:1:yes", "9100910091009100")
    assert (press.identity.platform, press.identity.platform_user_id) == ("discord", ALICE)
    assert press.identity.chat_id == DM_CHANNEL
    assert press.account == ChatAccount.objects.get(user=owner)
    assert answer == {
        "type": 4,
        "data": {"content": "Done.", "allowed_mentions": {"parse": []}, "flags": EPHEMERAL},
    }


def test_a_button_pressed_by_an_account_not_linked_reaches_no_handler(
    client, app, signing_key, owner
):
    linked(app, owner)
    register_button_handler("thing", lambda press: pytest.fail("must not be called"))

    refused = _send(client, app, signing_key, button_press("thing:1:yes", "91", user_id=MALLORY))
    stale = _send(client, app, signing_key, button_press("gone:1", "92"))

    assert _unescaped(refused["data"]["content"]) == (
        "This account is not linked to a staff account: send /link CODE first."
    )
    assert refused["data"]["flags"] == EPHEMERAL
    assert stale["data"]["content"] == "This button no longer works."


def test_a_button_past_the_rate_limit_is_acknowledged_silently(
    client, app, signing_key, owner, settings
):
    settings.CHATOPS_COMMANDS_PER_MINUTE = 1
    linked(app, owner)
    register_button_handler("thing", lambda press: "Done.")

    answers = [
        post_interaction(client, app, signing_key, button_press("thing:1", "93")).json()
        for _ in range(3)
    ]

    assert answers[0]["data"]["content"] == "Done."
    assert _unescaped(answers[1]["data"]["content"]).startswith("Too many messages")
    assert answers[2] == {"type": 6}


def test_markdown_at_a_lines_start_is_escaped_too():
    text = "# Big\n-# small\n> quote\n- item\n12. item\nmid # - > 3. stay"

    assert escape_markdown(text) == (
        "\\# Big\n\\-# small\n\\> quote\n\\- item\n12\\. item\nmid # - > 3. stay"
    )

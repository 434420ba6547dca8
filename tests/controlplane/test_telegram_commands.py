"""The command dispatcher as Telegram users meet it: commands apps register run as
the linked staff member, unknown ones get a short help, a failing one says so,
messages are rate-limited per account, replies are split within Telegram's limit and
user text is escaped so that it cannot break the HTML parse mode; buttons reach the
handler registered for them."""

from __future__ import annotations

import pytest
from django.utils.html import format_html

from controlplane import chat_commands
from controlplane.chat_commands import (
    SLOW_DOWN,
    Button,
    ButtonPress,
    CommandRequest,
    Reply,
    register_button_handler,
    register_command,
)
from controlplane.chat_replies import CUT, split_markup
from controlplane.models import AuditEvent, FeatureToggle
from tests.controlplane.telegram_bots import (
    ALICE,
    MALLORY,
    hook_bot,
    linked,
    post_update,
    say,
    telegram,
)

__all__ = ["hook_bot", "telegram"]  # fixtures

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _own_registries(monkeypatch):
    # Commands and buttons a test registers go when it ends.
    monkeypatch.setattr(chat_commands, "_commands", dict(chat_commands._commands))
    monkeypatch.setattr(chat_commands, "_button_handlers", dict(chat_commands._button_handlers))


@pytest.fixture
def minute(monkeypatch):
    clock = {"minute": 29_000_000}
    monkeypatch.setattr(chat_commands, "current_minute", lambda: clock["minute"])
    return clock


# Commands


def test_a_registered_command_runs_as_the_linked_member_with_its_arguments(
    client, telegram, hook_bot, operator
):
    account = linked(hook_bot, operator)
    seen: list[CommandRequest] = []

    def whoami(request: CommandRequest) -> str:
        seen.append(request)
        may_decide = request.user.has_perm("controlplane.decide_approval")
        return f"{request.user.get_username()} may decide: {may_decide}"

    register_command("whoami", whoami, summary="Who you are")

    replies = say(client, telegram, hook_bot, "/whoami@ops_bot  now please ")

    assert replies == ["oscar-operator may decide: True"]
    assert (seen[0].user, seen[0].account, seen[0].args) == (operator, account, "now please")
    assert seen[0].identity.chat_id == str(ALICE)
    assert "/whoami: Who you are" in say(client, telegram, hook_bot, "/help")[0]


def test_an_unknown_command_gets_a_short_help(client, telegram, hook_bot, owner):
    linked(hook_bot, owner)

    replies = say(client, telegram, hook_bot, "/frobnicate now")

    # Apps add their own commands (/run, /status...) to the list.
    assert replies == [f"I do not know /frobnicate. {chat_commands.short_help()}"]
    assert "/help, /link" in replies[0]


def test_a_message_that_is_no_command_gets_the_short_help(client, telegram, hook_bot, owner):
    linked(hook_bot, owner)

    assert say(client, telegram, hook_bot, "hello?") == [chat_commands.short_help()]


def test_a_failing_command_says_so_and_takes_back_only_its_own_writes(
    client, telegram, hook_bot, owner
):
    linked(hook_bot, owner)

    def broken(request: CommandRequest) -> str:
        FeatureToggle.objects.create(key="half-written", enabled=True)
        raise RuntimeError("a bug")

    register_command("broken", broken, summary="Breaks")

    response = post_update(client, hook_bot, telegram.update(telegram.message(ALICE, "/broken")))

    assert response.status_code == 200
    assert telegram.texts_to(ALICE) == [
        "That command failed; the error is in the control plane's log."
    ]
    assert not FeatureToggle.objects.filter(key="half-written").exists()


# Rate limit


def test_past_the_rate_limit_one_slow_down_then_silence_until_the_next_minute(
    client, telegram, hook_bot, owner, settings, minute
):
    settings.CHATOPS_COMMANDS_PER_MINUTE = 3
    linked(hook_bot, owner)

    replies = [say(client, telegram, hook_bot, "/help") for _ in range(5)]

    assert [len(r) for r in replies] == [1, 1, 1, 1, 0]
    assert replies[3] == [SLOW_DOWN]
    # Another account has its own allowance.
    assert say(client, telegram, hook_bot, "/help", user_id=MALLORY) != []
    minute["minute"] += 1
    assert say(client, telegram, hook_bot, "/help")[0].startswith("You act as wendy-owner.")


def test_link_attempts_count_against_the_rate_limit(client, telegram, hook_bot, settings, minute):
    settings.CHATOPS_COMMANDS_PER_MINUTE = 2

    replies = [say(client, telegram, hook_bot, "/link AAAA-AAAA") for _ in range(4)]

    assert replies[2] == [SLOW_DOWN]
    assert replies[3] == []


# Length and escaping


def test_user_text_is_escaped_so_it_cannot_break_the_html(client, telegram, hook_bot, owner):
    linked(hook_bot, owner)
    register_command("echo", lambda request: f"You said: {request.args}", summary="Echo")
    register_command("bold", lambda request: format_html("<b>{}</b>", request.args), summary="Bold")

    echoed = say(client, telegram, hook_bot, "/echo <script>x</script> & <b>unclosed")
    bold = say(client, telegram, hook_bot, "/bold </b><i>")

    assert echoed == ["You said: &lt;script&gt;x&lt;/script&gt; &amp; &lt;b&gt;unclosed"]
    assert bold == ["<b>&lt;/b&gt;&lt;i&gt;</b>"]
    assert all(m["parse_mode"] == "HTML" for m in telegram.sent)


def test_a_long_reply_is_split_at_line_breaks_within_the_limit(client, telegram, hook_bot, owner):
    linked(hook_bot, owner)
    lines = [f"line {n}: <{'x' * 90}>" for n in range(100)]
    register_command("long", lambda request: "\n".join(lines), summary="Long")

    replies = say(client, telegram, hook_bot, "/long")

    assert len(replies) == 3
    assert all(len(text) <= 4096 for text in replies)
    joined = "\n".join(replies)
    assert joined.split("\n")[0] == "line 0: &lt;" + "x" * 90 + "&gt;"
    assert joined.count("\n") == 99  # every line, in order, none cut


def test_a_reply_past_four_messages_is_cut_with_a_mark():
    markup = "\n".join(["y" * 4000] * 6)

    messages = split_markup(markup)

    assert len(messages) == 4
    assert messages[-1] == "y" * 4000 + "\n" + CUT
    assert all(len(m) <= 4096 for m in messages)


def test_one_line_too_long_is_cut_as_plain_text_never_inside_a_tag_or_entity():
    markup = "<b>" + "&amp;" * 2000 + "</b>"

    (message,) = split_markup(markup)

    assert len(message) <= 4096
    assert message.endswith(CUT)
    assert "<b>" not in message
    assert message.removesuffix(CUT) == "&amp;" * (len(message.removesuffix(CUT)) // 5)


# Buttons (the hook approvals by button plug into)


def _press(telegram, data, user_id=ALICE):
    return telegram.update(
        {
            "callback_query": {
                "id": f"query-{user_id}-{data}",
                "from": {"id": user_id, "is_bot": False, "first_name": "Alice"},
                "message": {"message_id": 42, "chat": {"id": user_id, "type": "private"}},
                "data": data,
            }
        }
    )


def test_a_button_reaches_its_handler_as_the_linked_member(client, telegram, hook_bot, owner):
    linked(hook_bot, owner)
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

    say(client, telegram, hook_bot, "/ask")
    post_update(client, hook_bot, _press(telegram, "thing:1:yes"))

    assert telegram.sent[0]["reply_markup"] == {
        "inline_keyboard": [
            [
                {"text": "Yes", "callback_data": "thing:1:yes"},
                {"text": "No", "callback_data": "thing:1:no"},
            ]
        ]
    }
    assert (pressed[0].user, pressed[0].data, pressed[0].message_id) == (owner, "thing:1:yes", "42")
    assert telegram.answered[-1]["text"] == "Done."


def test_a_button_pressed_by_an_account_not_linked_reaches_no_handler(
    client, telegram, hook_bot, owner
):
    linked(hook_bot, owner)
    register_button_handler("thing", lambda press: pytest.fail("must not be called"))

    post_update(client, hook_bot, _press(telegram, "thing:1:yes", user_id=MALLORY))
    post_update(client, hook_bot, _press(telegram, "gone:1"))

    assert [a["text"] for a in telegram.answered] == [
        "This account is not linked to a staff account: send /link CODE first.",
        "This button no longer works.",
    ]
    assert not AuditEvent.objects.filter(action__startswith="thing").exists()

"""Mail without EMAIL_URL: one readable line per message in the log, never the raw
message (MIME headers, quoted-printable body) on the console."""

from __future__ import annotations

import logging

from django.core.mail import EmailMessage

from controlplane.mail_log import LoggedEmailBackend


def test_each_message_is_one_line_naming_whom_it_was_for_and_its_subject(caplog, capsys) -> None:
    caplog.set_level(logging.INFO, logger="controlplane.mail_log")
    messages = [
        EmailMessage(
            "Approval needed: toggle.set (#1)", "Decide at http://x/\n" * 5, to=["ops@example.com"]
        ),
        EmailMessage("Budget at 80%", "Spend ...", to=["a@example.com", "b@example.com"]),
    ]

    sent = LoggedEmailBackend().send_messages(messages)

    assert sent == 2
    lines = [record.getMessage() for record in caplog.records]
    not_sent = "(not sent: set EMAIL_URL to send mail)"
    assert lines == [
        f'email to ops@example.com: "Approval needed: toggle.set (#1)" {not_sent}',
        f'email to a@example.com, b@example.com: "Budget at 80%" {not_sent}',
    ]
    printed = capsys.readouterr()
    assert "MIME-Version" not in printed.out + printed.err

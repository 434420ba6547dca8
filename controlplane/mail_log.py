"""Mail in the embedded default: each message logged as one line, nothing sent.

Django's console backend prints a message whole, MIME headers and quoted-printable
body, which on `bin/run` landed between the Owner's password and "Serving on" (the
demo approval notifies its email channel). A person needs to see that a message went
out, to whom and about what; `EMAIL_URL` sends them for real (`consolemail://` still
prints them whole).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from django.core.mail.backends.base import BaseEmailBackend
from django.core.mail.message import EmailMessage

log = logging.getLogger(__name__)


class LoggedEmailBackend(BaseEmailBackend):
    def send_messages(self, email_messages: Sequence[EmailMessage]) -> int:
        for message in email_messages:
            log.info(
                'email to %s: "%s" (not sent: set EMAIL_URL to send mail)',
                ", ".join(message.recipients()),
                message.subject,
            )
        return len(email_messages)

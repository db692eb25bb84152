"""The e-mail sink: plain text with an HTML alternative, by SMTP (STARTTLS or TLS, optional login) or
the local sendmail program. Standard library only (smtplib, email).

Subject: `[jobmon] Job 123 (train) FAILED: cuda_oom` for a job's ending (from the message's facts),
`[jobmon] <title>` otherwise; one line, at most SUBJECT_LIMIT characters (RFC 5322 lines stay far
below 998). The body is kept within BODY_LIMIT (the log excerpt shrinks first): mail servers take far
more (commonly 10 MB and up), a phone does not need it.

What an SMTP answer means (RFC 5321): a 4xx reply is a temporary failure (RETRY), a 5xx one permanent
(GONE): a refused login (535), refused sender or recipients; a dropped connection or a timeout is
RETRY. Sendmail is run through `send_local` (given by the daemon, the one place processes start):
exit 0 is delivered, EX_TEMPFAIL (75) retry, anything else gone.
"""
from __future__ import annotations

import html
import re
from email.message import EmailMessage
from email.utils import formatdate
from typing import Any, Callable, Optional, Sequence, Tuple

from core.notify.http import fit, one_line, scrub
from core.notify.message import Envelope, Message
from core.notify.outbox import Answer, Outcome
from core.notify.plain import EXCERPT_HEADING, render_text
from core.notify.sink import Sink

SUBJECT_LIMIT = 200
BODY_LIMIT = 256 * 1024
EX_TEMPFAIL = 75

#: (argv, message bytes, timeout) -> (exit code, stderr text)
SendLocal = Callable[[Sequence[str], bytes, float], Tuple[int, str]]


def subject_of(message: Message, envelope: Optional[Envelope]) -> str:
    facts = message.facts
    if facts.job_id and facts.state and (envelope is None or envelope.kind == "final"):
        name = f" ({facts.name})" if facts.name else ""
        cause = f": {facts.findings[0]}" if facts.findings else ""
        text = f"Job {facts.job_id}{name} {facts.state}{cause}"
    else:
        text = message.title
    return fit("[jobmon] " + " ".join(text.split()), SUBJECT_LIMIT)


def html_of(message: Message, text_excerpt: str) -> str:
    esc = html.escape
    rows = "".join(f"<tr><th align=left valign=top>{esc(f.name)}</th><td><pre style='margin:0;white-space:pre-wrap'>"
                   f"{esc(f.value)}</pre></td></tr>" for f in message.fields)
    parts = [f"<h3>{esc(message.title)}</h3>"]
    if message.description:
        parts.append(f"<p>{esc(message.description).replace(chr(10), '<br>')}</p>")
    if rows:
        parts.append(f"<table cellpadding=4>{rows}</table>")
    if text_excerpt:
        parts.append(f"<p>{esc(EXCERPT_HEADING)}</p><pre>{esc(text_excerpt)}</pre>")
    if message.footer:
        parts.append(f"<p><small>{esc(message.footer)}</small></p>")
    return "<html><body>" + "".join(parts) + "</body></html>"


def render_mail(message: Message, envelope: Optional[Envelope], sender: str, to: Sequence[str]) -> EmailMessage:
    text = render_text(message, BODY_LIMIT)
    # The HTML part shows the same excerpt the text part kept (never more than the budget allowed).
    marker = f"{EXCERPT_HEADING}\n"
    kept = text.split(marker, 1)[1] if marker in text else ""
    if kept and message.footer and kept.endswith(message.footer):
        kept = kept[: -len(message.footer)].rstrip()
    mail = EmailMessage()
    mail["Subject"] = subject_of(message, envelope)
    mail["From"] = sender
    mail["To"] = ", ".join(to)
    mail["Date"] = formatdate(localtime=True)
    if envelope is not None:
        mail["Message-ID"] = f"<{re.sub(r'[^A-Za-z0-9.-]', '.', envelope.key)}.{envelope.created_at:.0f}@jobmon>"
    mail.set_content(text or message.title)
    mail.add_alternative(html_of(message, kept), subtype="html")
    return mail


def classify_smtp(exc: BaseException, secrets: Sequence[str]) -> Outcome:
    """What an smtplib exception means for the message."""
    import smtplib

    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        codes = [code for code, _ in exc.recipients.values()]
        permanent = all(code >= 500 for code in codes)
        answer = Answer.GONE if permanent else Answer.RETRY
        return Outcome(answer, f"recipients refused ({', '.join(map(str, sorted(set(codes))))})")
    if isinstance(exc, smtplib.SMTPAuthenticationError):
        return Outcome(Answer.GONE, f"SMTP login refused ({exc.smtp_code}); check user and password")
    if isinstance(exc, smtplib.SMTPNotSupportedError):
        return Outcome(Answer.GONE, "the SMTP server does not support that (STARTTLS or login): check the config")
    if isinstance(exc, smtplib.SMTPResponseException):
        text = exc.smtp_error.decode("utf-8", "replace") if isinstance(exc.smtp_error, bytes) else str(exc.smtp_error)
        detail = f"SMTP {exc.smtp_code}: {one_line(scrub(text, secrets), 200)}"
        return Outcome(Answer.RETRY if 400 <= exc.smtp_code < 500 else Answer.GONE, detail)
    if isinstance(exc, smtplib.SMTPServerDisconnected):
        return Outcome(Answer.RETRY, "the SMTP server closed the connection")
    if isinstance(exc, ConnectionRefusedError):
        return Outcome(Answer.RETRY, "connection refused (is the host and port right, is the server up?)")
    if isinstance(exc, TimeoutError) or type(exc).__name__ == "timeout":
        return Outcome(Answer.RETRY, "the SMTP server did not answer in time")
    if isinstance(exc, OSError):
        return Outcome(Answer.RETRY, f"network error ({type(exc).__name__})")
    return Outcome(Answer.RETRY, f"SMTP error ({type(exc).__name__})")


class MailSink(Sink):
    min_spacing = 1.0
    per_minute = 20

    def __init__(self, name: str, *, sender: str, to: Sequence[str], smtp: str = "", starttls: bool = False,
                 ssl: bool = False, user: str = "", password: str = "", sendmail: str = "",
                 send_local: Optional[SendLocal] = None) -> None:
        super().__init__(name)
        self.sender, self.to = sender, tuple(to)
        self.smtp, self.starttls, self.ssl = smtp, starttls, ssl
        self.user, self.password = user, password
        self.sendmail, self.send_local = sendmail, send_local

    @property
    def destination(self) -> str:
        return f"mail:{self.smtp or self.sendmail}:{','.join(self.to)}"

    def describe(self) -> str:
        via = f"smtp {self.smtp}" + (" starttls" if self.starttls else " ssl" if self.ssl else "") if self.smtp \
            else f"sendmail {self.sendmail}"
        return f"email to {', '.join(self.to)} via {via}"

    def render(self, message: Message, envelope: Optional[Envelope] = None) -> EmailMessage:
        return render_mail(message, envelope, self.sender, self.to)

    def deliver(self, payload: Any, timeout: float) -> Outcome:
        if self.sendmail:
            return self._sendmail(payload, timeout)
        import smtplib
        import ssl

        host, _, port_text = self.smtp.rpartition(":") if ":" in self.smtp else (self.smtp, "", "")
        port = int(port_text) if port_text else (465 if self.ssl else 587 if self.starttls else 25)
        secrets = [self.password]
        try:
            context = ssl.create_default_context()
            client = (smtplib.SMTP_SSL(host, port, timeout=timeout, context=context) if self.ssl
                      else smtplib.SMTP(host, port, timeout=timeout))
            with client:
                if self.starttls:
                    client.starttls(context=context)
                if self.user:
                    client.login(self.user, self.password)
                client.send_message(payload, from_addr=self.sender, to_addrs=list(self.to))
        except Exception as exc:  # smtplib raises many kinds; each is classified, none escapes
            return classify_smtp(exc, secrets)
        return Outcome(Answer.DELIVERED, "delivered")

    def _sendmail(self, payload: EmailMessage, timeout: float) -> Outcome:
        if self.send_local is None:
            return Outcome(Answer.GONE, "sendmail is not available in this process")
        try:
            code, error = self.send_local([self.sendmail, "-t", "-oi"], payload.as_bytes(), timeout)
        except OSError as exc:
            return Outcome(Answer.GONE, f"cannot run {self.sendmail} ({exc.strerror or type(exc).__name__})")
        if code == 0:
            return Outcome(Answer.DELIVERED, "delivered")
        detail = f"{self.sendmail} exited {code}: {one_line(error, 200)}"
        return Outcome(Answer.RETRY if code in (EX_TEMPFAIL, -1) else Answer.GONE, detail)


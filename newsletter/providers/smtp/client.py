"""SMTP provider: one reused connection, one message per recipient, driven step by step (smtplib)
so that we know when the server may have the message: after the end of DATA, no retry.

Per message: MAIL, RCPT and DATA in one write when the server offers PIPELINING (RFC 2920: one
round trip instead of three), then the message, built from a template made once per send (data.py)."""

from __future__ import annotations

import smtplib
import socket
import ssl
from email.errors import MessageError

from ...errors import ConfigError
from ...message import BatchResult, Envelope, Personalization
from ...scrub import login_forms, scrub
from . import SMTPSettings
from .data import DOT_ATOM, DataTemplate, template_for


class _Down(Exception):
    """The server cannot be reached (now): this recipient and the rest of the batch wait."""


class SMTPProvider:
    """Sends each personalized message separately over one connection kept across batches."""

    name = "smtp"
    max_batch = 1  # see SPEC.batch_size

    def __init__(self, settings: SMTPSettings) -> None:
        self.settings = settings
        self.connections = 0  # connections opened, so that tests can assert reuse
        self._smtp: smtplib.SMTP | None = None
        self._fatal: ConfigError | None = None  # raised on the next send(), see below
        self._template: DataTemplate | None = None  # the current envelope's

    @property
    def _where(self) -> str:
        return f"{self.settings.host}:{self.settings.port}"

    def _scrub(self, text: str) -> str:
        """Server replies can echo the password (or its AUTH base64): never show or store it."""
        return scrub(text, login_forms(self.settings.username, self.settings.password))

    def send(self, envelope: Envelope, batch: list[Personalization]) -> BatchResult:
        if self._fatal is not None:
            raise self._fatal
        result = BatchResult()
        template = self._template
        if template is None or template.envelope is not envelope:
            template = self._template = template_for(envelope)
        for i, p in enumerate(batch):
            # a non-ASCII address needs SMTPUTF8, and the headers then travel as UTF-8
            utf8 = not (envelope.from_email + p.email).isascii()
            try:
                data, size, message_id = template.data(p, utf8=utf8)
            except (ValueError, MessageError) as e:  # e.g. a line break in a name: no retry helps
                result.failed[p.email] = f"cannot build the message: {e}"
                continue
            try:
                outcome, text = self._deliver(data, size, message_id, envelope.from_email, p.email, utf8)
            except _Down as e:
                # a dead server stays dead for a while: leave the rest to the dispatcher's backoff
                for q in batch[i:]:
                    result.retry[q.email] = self._scrub(str(e))
                result.unreachable = True
                break
            except ConfigError as e:
                if not (result.sent or result.failed or result.unknown):  # nothing to report: stop
                    raise
                # e.g. the password changed before a reconnect: report what was already handed
                # over so that the ledger records it (no duplicates on resume); stop at the next call
                self._fatal = e
                for q in batch[i:]:
                    result.retry[q.email] = str(e)
                break
            getattr(result, outcome)[p.email] = self._scrub(text)
        return result

    def close(self) -> None:
        smtp, self._smtp = self._smtp, None
        if smtp is None:
            return
        try:
            smtp.quit()
        except (OSError, smtplib.SMTPException):  # the server may be gone already; nothing to save
            pass
        finally:
            smtp.close()

    def _deliver(
        self, data: bytes, size: int, message_id: str, from_addr: str, to: str, utf8: bool
    ) -> tuple[str, str]:
        """("sent" | "failed" | "retry" | "unknown", answer) for one message (`data`: dot-stuffed,
        see data.py); raises _Down when the server is unreachable or closing."""
        for attempt in (1, 2):
            smtp = self._smtp or self._connect()
            try:
                refusal = _hand_over(smtp, data, size, from_addr, to, utf8)
            except smtplib.SMTPNotSupportedError as e:  # e.g. a non-ASCII address without SMTPUTF8
                return "failed", f"{self._where}: {e}"
            except (OSError, smtplib.SMTPException) as e:  # dropped, reset, broken pipe, timeout
                # ...all before the end of DATA went out: the server cannot have the message
                self._discard()
                if attempt == 2:
                    raise _Down(f"connection to {self._where} lost: {_describe(e)}") from None
                continue  # the server may just have closed an idle connection: reconnect once
            if refusal is not None:
                return self._outcome(smtp, *refusal)
            return self._final_reply(smtp, message_id)
        raise AssertionError("unreachable")

    def _final_reply(self, smtp: smtplib.SMTP, message_id: str) -> tuple[str, str]:
        """The reply to the end of DATA. Past this point the server may have accepted the message
        (RFC 1047): without a clear reply its fate is unknown, and a retry could send a 2nd copy."""
        try:
            code, reply = smtp.getreply()
        except (OSError, smtplib.SMTPException) as e:  # dropped, reset, timed out, line too long
            self._discard()  # the next reader gets a fresh connection
            return "unknown", self._unknown(message_id, _describe(e))
        if 200 <= code < 300:
            return "sent", message_id
        if 400 <= code < 600:  # a clear refusal: the server did not take the message
            return self._outcome(smtp, code, reply)
        self._discard()  # -1 is smtplib's "no reply code": we cannot tell what the server meant
        return "unknown", self._unknown(message_id, f"unreadable reply: {_text(reply)}")

    def _unknown(self, message_id: str, why: str) -> str:
        return (f"{self._where}: no clear reply after the whole message was sent ({why}); the "
                f"server may have accepted it, so it is not resent automatically; look for "
                f"Message-ID {message_id} in the server's log")

    def _outcome(self, smtp: smtplib.SMTP, code: int, text: bytes | str) -> tuple[str, str]:
        """Sort a refusal: 5xx failed, 4xx retry; 421 or an unreadable reply costs the connection."""
        answer = f"{self._where}: {code} {_text(text)}"
        if code == 421:
            # "service closing": the server hangs up; hammering it would not help
            self._discard()
            raise _Down(self._scrub(answer))
        if not 400 <= code < 600:  # garbled or out of order: the dialogue is lost, start afresh
            self._discard()
            return "retry", answer
        try:
            smtp.rset()  # end the refused transaction; the connection serves the next reader
        except (OSError, smtplib.SMTPException):
            self._discard()
        return ("failed" if code >= 500 else "retry"), answer

    def _connect(self) -> smtplib.SMTP:
        s = self.settings
        # verifies the certificate and the host name; made only for TLS: loading the CA bundle
        # takes ~60 ms, a cost each of the connections paid at start even for plain SMTP
        context = ssl.create_default_context() if s.security != "none" else None
        try:
            if s.security == "ssl":
                smtp: smtplib.SMTP = smtplib.SMTP_SSL(
                    s.host, s.port, timeout=s.timeout, context=context
                )
            else:
                smtp = smtplib.SMTP(s.host, s.port, timeout=s.timeout)
        except ssl.SSLCertVerificationError as e:
            raise ConfigError(_tls_hint(self._where, e)) from None
        except (OSError, smtplib.SMTPException) as e:
            raise _Down(f"cannot connect to {self._where}: {_describe(e)}") from None
        self.connections += 1
        try:
            # the end of DATA goes out as a 3-byte write of its own (see _hand_over): without this,
            # Nagle's algorithm can hold it until the server's delayed ACK of the body (~40 ms)
            if smtp.sock is not None:
                smtp.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if s.security == "starttls":
                smtp.starttls(context=context)
            if s.username:
                smtp.login(s.username, s.password or "")
        except smtplib.SMTPAuthenticationError as e:
            smtp.close()
            raise ConfigError(self._scrub(
                f"SMTP server {self._where} refused the login for {s.username!r} ({e.smtp_code} "
                f"{_text(e.smtp_error)}); check NEWSLETTER_SMTP_USERNAME and NEWSLETTER_SMTP_PASSWORD"
            )) from None
        except ssl.SSLCertVerificationError as e:
            smtp.close()
            raise ConfigError(_tls_hint(self._where, e)) from None
        except smtplib.SMTPNotSupportedError as e:  # no STARTTLS or no AUTH offered: a setting
            smtp.close()
            raise ConfigError(self._scrub(
                f"SMTP server {self._where}: {e}; check [smtp] security and username"
            )) from None
        except (OSError, smtplib.SMTPException) as e:
            smtp.close()
            raise _Down(f"cannot set up the connection to {self._where}: {_describe(e)}") from None
        self._smtp = smtp
        return smtp

    def _discard(self) -> None:
        """Forget a broken connection without talking to the server again."""
        smtp, self._smtp = self._smtp, None
        if smtp is not None:
            smtp.close()


def _hand_over(
    smtp: smtplib.SMTP, data: bytes, size: int, from_addr: str, to: str, utf8: bool
) -> tuple[int, bytes | str] | None:
    """MAIL, RCPT, DATA and the message (dot-stuffed `data`), up to and including the end of DATA:
    None when all of it went out, else the refusal (code, reply) that stopped it. Does what
    smtp.sendmail does (same commands, options and checks) but stops short of reading the final
    reply, which may never come."""
    try:
        smtp.ehlo_or_helo_if_needed()
    except smtplib.SMTPHeloError as e:
        return e.smtp_code, e.smtp_error
    options: list[str] = []
    if smtp.does_esmtp and smtp.has_extn("size"):
        options.append(f"size={size}")
    if utf8:
        if not smtp.has_extn("smtputf8"):
            raise smtplib.SMTPNotSupportedError(
                "One or more source or delivery addresses require internationalized email "
                "support, but the server does not advertise the required SMTPUTF8 capability"
            )
        options += ["SMTPUTF8", "BODY=8BITMIME"]
    if smtp.does_esmtp and smtp.has_extn("pipelining"):
        refusal = _pipelined(smtp, from_addr, to, options)
    else:
        refusal = _in_turn(smtp, from_addr, to, options)
    if refusal is not None:
        return refusal
    smtp.send(data if data.endswith(b"\r\n") else data + b"\r\n")
    # The end of DATA goes out on its own: until this send returns, the server cannot have seen
    # it (a failed sendall leaves at least its last byte unsent), so a failure up to here is safe
    # to retry, and anything after it is not.
    smtp.send(b".\r\n")
    return None


def _in_turn(smtp: smtplib.SMTP, from_addr: str, to: str, options: list[str]) -> tuple[int, bytes] | None:
    """MAIL, RCPT and DATA one after the other, each waiting for its reply (smtplib's way)."""
    code, reply = smtp.mail(from_addr, options)
    if code != 250:
        return code, reply
    code, reply = smtp.rcpt(to)
    if code not in (250, 251):
        return code, reply
    smtp.putcmd("data")
    code, reply = smtp.getreply()
    return None if code == 354 else (code, reply)


def _pipelined(smtp: smtplib.SMTP, from_addr: str, to: str, options: list[str]) -> tuple[int, bytes] | None:
    """MAIL, RCPT and DATA in one write, then their three replies (RFC 2920): what _in_turn sends,
    in one round trip instead of three. None when DATA was answered 354, else the first refusal."""
    if "SMTPUTF8" in options:
        smtp.command_encoding = "utf-8"  # as smtp.mail() does
    commands = (f"mail from:{_quote(from_addr)}{' ' + ' '.join(options) if options else ''}\r\n"
                f"rcpt to:{_quote(to)}\r\ndata\r\n")
    if commands.count("\r") != 3 or commands.count("\n") != 3:  # smtp.putcmd's check
        raise ValueError(f"command and arguments contain prohibited newline characters: {commands!r}")
    smtp.send(commands)
    refusal = None
    for expected in ((250,), (250, 251), (354,)):
        code, reply = smtp.getreply()
        if code == 421:  # the server is closing: the other replies will not come
            return code, reply
        if code not in expected and refusal is None:
            refusal = code, reply
        if code == 354 and refusal is not None:
            # DATA accepted although MAIL or RCPT was refused (RFC 2920 says it must not be): the
            # server now waits for a message. Hang up: sending anything could deliver it; the
            # caller's RSET then fails and it takes a new connection.
            smtp.close()
    return refusal


def _quote(address: str) -> str:
    """smtplib.quoteaddr(address), without its RFC 822 parser (~30 µs) for a plain address."""
    return f"<{address}>" if DOT_ATOM.fullmatch(address) else smtplib.quoteaddr(address)


def _text(reply: bytes | str) -> str:
    return reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply)


def _describe(e: BaseException) -> str:
    if isinstance(e, smtplib.SMTPResponseException):  # str() would show the reply as a bytes repr,
        return f"{e.smtp_code} {_text(e.smtp_error)}"  # where scrub() could miss an escaped secret
    return str(e) or type(e).__name__  # a bare timeout has no text


def _tls_hint(where: str, e: ssl.SSLCertVerificationError) -> str:
    return (
        f"SMTP server {where}: TLS certificate not trusted ({e.verify_message}); check [smtp] host "
        "(it must match the certificate) or set SSL_CERT_FILE to the CA bundle that signed it"
    )

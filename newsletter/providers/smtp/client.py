"""SMTP provider: one reused connection, one message per recipient (smtplib)."""

from __future__ import annotations

import smtplib
import ssl
from email.errors import MessageError

from ...errors import ConfigError
from ...message import BatchResult, Envelope, Personalization
from ...mime import message_bytes
from . import SMTPSettings


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

    @property
    def _where(self) -> str:
        return f"{self.settings.host}:{self.settings.port}"

    def send(self, envelope: Envelope, batch: list[Personalization]) -> BatchResult:
        if self._fatal is not None:
            raise self._fatal
        result = BatchResult()
        for i, p in enumerate(batch):
            # a non-ASCII address needs SMTPUTF8, and the headers then travel as UTF-8
            utf8 = not (envelope.from_email + p.email).isascii()
            try:
                data, message_id = message_bytes(envelope, p, utf8=utf8)
            except (ValueError, MessageError) as e:  # e.g. a line break in a name: no retry helps
                result.failed[p.email] = f"cannot build the message: {e}"
                continue
            try:
                outcome, text = self._deliver(data, message_id, envelope.from_email, p.email, utf8)
            except _Down as e:
                # a dead server stays dead for a while: leave the rest to the dispatcher's backoff
                for q in batch[i:]:
                    result.retry[q.email] = str(e)
                result.unreachable = True
                break
            except ConfigError as e:
                if not (result.sent or result.failed):  # nothing to report: just stop
                    raise
                # e.g. the password changed before a reconnect: report what was already sent so
                # that the ledger records it (no duplicates on resume), and stop at the next call
                self._fatal = e
                for q in batch[i:]:
                    result.retry[q.email] = str(e)
                break
            getattr(result, outcome)[p.email] = text
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
        self, data: bytes, message_id: str, from_addr: str, to: str, utf8: bool
    ) -> tuple[str, str]:
        """("sent" | "failed" | "retry", answer) for one message; raises _Down when unreachable."""
        for attempt in (1, 2):
            smtp = self._smtp or self._connect()
            try:
                refused = _sendmail(smtp, data, from_addr, to, utf8)
            except smtplib.SMTPRecipientsRefused as e:
                code, text = e.recipients.get(to, (0, b"recipient refused"))
                return self._outcome(smtp, code, text)
            except smtplib.SMTPNotSupportedError as e:  # e.g. a non-ASCII address without SMTPUTF8
                return "failed", f"{self._where}: {e}"
            except smtplib.SMTPResponseException as e:  # sender refused, data refused, HELO refused
                return self._outcome(smtp, e.smtp_code, e.smtp_error)
            except (OSError, smtplib.SMTPException) as e:  # dropped, reset, broken pipe, timeout
                self._discard()
                if attempt == 2:
                    raise _Down(f"connection to {self._where} lost: {_describe(e)}") from None
                continue  # the server may just have closed an idle connection: reconnect once
            if to in refused:
                return self._outcome(smtp, *refused[to])
            return "sent", message_id
        raise AssertionError("unreachable")

    def _outcome(self, smtp: smtplib.SMTP, code: int, text: bytes | str) -> tuple[str, str]:
        reply = text.decode("utf-8", "replace") if isinstance(text, bytes) else text
        answer = f"{self._where}: {code} {reply}"
        if smtp.sock is None:
            # smtplib hangs up after a 421 ("service closing"): hammering it would not help
            self._smtp = None
            raise _Down(answer)
        return ("failed" if 500 <= code < 600 else "retry"), answer

    def _connect(self) -> smtplib.SMTP:
        s = self.settings
        context = ssl.create_default_context()  # verifies the certificate and the host name
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
            if s.security == "starttls":
                smtp.starttls(context=context)
            if s.username:
                smtp.login(s.username, s.password or "")
        except smtplib.SMTPAuthenticationError as e:
            smtp.close()
            raw = e.smtp_error
            reply = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
            if s.password:  # a server should never echo it, but make sure we never print it
                reply = reply.replace(s.password, "***")
            raise ConfigError(
                f"SMTP server {self._where} refused the login for {s.username!r} ({e.smtp_code} "
                f"{reply}); check NEWSLETTER_SMTP_USERNAME and NEWSLETTER_SMTP_PASSWORD"
            ) from None
        except ssl.SSLCertVerificationError as e:
            smtp.close()
            raise ConfigError(_tls_hint(self._where, e)) from None
        except smtplib.SMTPNotSupportedError as e:  # no STARTTLS or no AUTH offered: a setting
            smtp.close()
            raise ConfigError(
                f"SMTP server {self._where}: {e}; check [smtp] security and username"
            ) from None
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


def _sendmail(
    smtp: smtplib.SMTP, data: bytes, from_addr: str, to: str, utf8: bool
) -> dict[str, tuple[int, bytes]]:
    """smtp.send_message without its serialization (~1.8 ms a message: mime.message_bytes has
    done it), with the same checks and options, so the same errors reach _deliver."""
    smtp.ehlo_or_helo_if_needed()
    options: tuple[str, ...] = ()
    if utf8:
        if not smtp.has_extn("smtputf8"):
            raise smtplib.SMTPNotSupportedError(
                "One or more source or delivery addresses require internationalized email "
                "support, but the server does not advertise the required SMTPUTF8 capability"
            )
        options = ("SMTPUTF8", "BODY=8BITMIME")
    return smtp.sendmail(from_addr, [to], data, options)


def _describe(e: BaseException) -> str:
    return str(e) or type(e).__name__  # a bare timeout has no text


def _tls_hint(where: str, e: ssl.SSLCertVerificationError) -> str:
    return (
        f"SMTP server {where}: TLS certificate not trusted ({e.verify_message}); check [smtp] host "
        "(it must match the certificate) or set SSL_CERT_FILE to the CA bundle that signed it"
    )

"""A real SMTP server for tests: aiosmtpd in a thread, recording what it receives, and able to
refuse, hang up, slow down or hold a message on request, or accept a message and then lose or
delay the reply to it (the duplicate window of RFC 1047)."""

from __future__ import annotations

import asyncio
import email
import socket
import threading
from collections import Counter
from dataclasses import dataclass, field
from email import policy
from email.message import EmailMessage
from typing import ClassVar

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP


@dataclass
class Recorder:
    """aiosmtpd handler: records each message, refuses or hangs up on request."""

    refuse_rcpt: dict[str, str] = field(default_factory=dict)  # address -> reply, e.g. "550 ..."
    refuse_data: dict[str, str] = field(default_factory=dict)  # address -> reply to DATA
    drop_at_mail: set[int] | None = None  # MAIL commands (1-based) at which to hang up; None: never
    drop_always: bool = False
    drop_at_data_command: set[int] | None = None  # DATA commands (1-based) answered by a hang-up
    data_commands: int = 0
    messages: list[tuple[str, list[str], EmailMessage, dict]] = field(default_factory=list)
    sessions: int = 0  # TCP connections (a STARTTLS upgrade is the same session)
    open_now: int = 0  # connections open at this moment...
    max_open: int = 0  # ...and the most that were open at once
    mails: int = 0
    servers: list[SMTP] = field(default_factory=list)
    delay: float = 0.0  # seconds each DATA takes, so a test can interrupt a send midway
    hold_at: int | None = None  # the Nth message (1-based) is held until `release` is set...
    holding: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)
    datas: int = 0
    # After the whole message came in, it is kept (a delivered copy), and then the reply is lost:
    lose_reply_every: int | None = None  # every Nth DATA (1-based): hang up instead of "250"
    late_reply: dict[str, float] = field(default_factory=dict)  # address -> seconds before "250"
    garbled_reply: dict[str, str] = field(default_factory=dict)  # address -> reply without a code
    lost_replies: list[str] = field(default_factory=list)  # addresses whose "250" never went out
    # RFC 2920: offered, as real servers do, so the client sends MAIL, RCPT and DATA in one go;
    # test_smtp.py also runs everything with it off (Recorder.pipelining = False)
    pipelining: ClassVar[bool] = True
    pipelined_mails: int = 0  # MAIL commands that came with RCPT and DATA behind them, unanswered
    data_without_rcpt: bool = False  # answer DATA with 354 even when no recipient was accepted

    async def handle_EHLO(self, server, session, envelope, hostname, responses):  # noqa: ANN001
        session.host_name = hostname  # what aiosmtpd does itself without this hook
        if self.pipelining:
            responses.insert(-1, "250-PIPELINING")
        return responses

    def received(self, address: str) -> int:
        """How many copies `address` got."""
        return sum(address in rcpts for _, rcpts, _, _ in self.messages)

    def copies(self) -> Counter[str]:
        """Copies kept per address."""
        return Counter(rcpt for _, rcpts, _, _ in self.messages for rcpt in rcpts)

    async def handle_MAIL(self, server, session, envelope, address, mail_options):  # noqa: ANN001
        self.mails += 1
        if bytes(server._reader._buffer).upper().endswith(b"DATA\r\n"):  # here before MAIL's reply
            self.pipelined_mails += 1
        if self.drop_always or (self.drop_at_mail and self.mails in self.drop_at_mail):
            server.transport.abort()  # a hard hang-up: no reply at all
            return "421 gone"  # never reaches the client
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):  # noqa: ANN001
        if address in self.refuse_rcpt:
            return self.refuse_rcpt[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):  # noqa: ANN001
        self.datas += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.hold_at == self.datas:
            # ...and then refused: the client was killed while waiting, the message never lands
            self.holding.set()
            while not self.release.is_set():
                await asyncio.sleep(0.02)
            return "451 4.3.0 Held by the test, not delivered"
        for rcpt in envelope.rcpt_tos:
            if rcpt in self.refuse_data:
                return self.refuse_data[rcpt]
        msg = email.message_from_bytes(envelope.original_content, policy=policy.default)
        info = {
            "tls": session.ssl is not None,
            "login": getattr(session.auth_data, "login", None),
            "server": id(server),
        }
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), msg, info))
        # the message is kept: from here on, a lost reply leaves the client not knowing that
        rcpt = envelope.rcpt_tos[0]
        if self.lose_reply_every and self.datas % self.lose_reply_every == 0:
            self.lost_replies.append(rcpt)
            server.transport.abort()  # a hard hang-up: the "250" never leaves
            return "250 2.0.0 Message accepted (never sent)"
        if rcpt in self.garbled_reply:
            return self.garbled_reply[rcpt]
        if rcpt in self.late_reply:
            await asyncio.sleep(self.late_reply[rcpt])  # the client may have given up by now
        return "250 2.0.0 Message accepted"


class CountingSMTP(SMTP):
    def connection_made(self, transport) -> None:  # noqa: ANN001
        if self._original_transport is None:  # not the second call after STARTTLS
            handler = self.event_handler
            handler.sessions += 1
            handler.servers.append(self)
            handler.open_now += 1
            handler.max_open = max(handler.max_open, handler.open_now)
        super().connection_made(transport)

    def connection_lost(self, exc) -> None:  # noqa: ANN001
        if not getattr(self, "_lost", False):  # called twice after a failed TLS set-up
            self._lost = True
            self.event_handler.open_now -= 1
        super().connection_lost(exc)

    async def smtp_DATA(self, arg: str) -> None:
        handler = self.event_handler
        handler.data_commands += 1
        if handler.drop_at_data_command and handler.data_commands in handler.drop_at_data_command:
            self.transport.abort()  # before "354": the client never sends the message
            return
        if handler.data_without_rcpt and not self.envelope.rcpt_tos:
            self.envelope.rcpt_tos.append("nobody@example.org")  # so aiosmtpd says 354 (wrongly)
        await super().smtp_DATA(arg)


class CountingController(Controller):
    def factory(self) -> SMTP:
        return CountingSMTP(self.handler, **self.SMTP_kwargs)


def free_port() -> int:
    # Controller(port=0) cannot report the port it got, so pick one first
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]



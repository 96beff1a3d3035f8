"""One recipient's email as a MIME message: multipart/alternative, text first, then HTML."""

from __future__ import annotations

import base64
import quopri
import re
from email.header import Header
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import EmailPolicy
from email.utils import formataddr, formatdate, make_msgid
from functools import lru_cache
from typing import Any

from .message import Envelope, Personalization


class _Literal(str):
    """A subject kept as written: it holds text the header parser would decode (see _MailPolicy)."""


class _Verbatim(str):
    """A header value already ASCII and encoded (List-Id): stored and written as it is; reading it
    (msg["List-Id"]) decodes it, as for any header."""


class _MailPolicy(EmailPolicy):
    """The default policy, except for the headers it gets wrong for us.

    Subject: see _subject. To and Subject holding "=?": see header_store_parse.
    List-Id: made ready to write by personalize.list_id_header; see _words.
    List-Unsubscribe: never RFC 2047-encoded.
    Python folds a token longer than 78 characters, such as a signed unsubscribe URL, as encoded
    words (=?utf-8?q?...?=); mail clients then find no URL in the header and show no unsubscribe
    button. RFC 2369 allows folding only between the <...> items, so we fold there ourselves."""

    def _verbatim(self, name: str, value: str) -> str:
        items = re.split(r"(?<=>)\s*,\s*", str(value).strip())
        return f"{name}: " + f",{self.linesep} ".join(items) + self.linesep

    def _words(self, name: str, value: str) -> str:
        """An ASCII value folded at its spaces, as few lines as fit in max_line_length. List-Id's
        value holds encoded words, which the parser would decode (a name written as the encoded
        word of "Eve\\r\\nBcc: ..." became a header of its own) and the folder encode anew."""
        lines, line = [], f"{name}:"
        for word in str(value).split(" "):
            if len(line) + 1 + len(word) > (self.max_line_length or 78) and line != f"{name}:":
                lines.append(line)
                line = ""
            line += " " + word
        return self.linesep.join([*lines, line]) + self.linesep

    def _subject(self, name: str, value: str) -> str:
        # CPython's folder puts the space between two encoded words outside them, where RFC 2047
        # says decoders must drop it: ~1 in 10 long Cyrillic subjects arrived with words run
        # together. The legacy Header encoder keeps every space inside the encoded words.
        encoded = Header(str(value), "utf-8", header_name=name).encode(linesep=self.linesep)
        return f"{name}: {encoded}{self.linesep}"

    def header_store_parse(self, name: str, value: Any) -> tuple[str, Any]:
        # The parser decodes RFC 2047 syntax wherever it finds it, also in a reader's name or merge
        # field: "=?utf-8?q?Eve=0D=0ABcc:_x@example.net?=" became a line break in To: and
        # Subject:, i.e. a header of the reader's making. Such a value is kept as given (the
        # Address, a _Literal subject), and fold encodes it whole.
        if name.lower() == "to" and isinstance(value, Address) and "=?" in value.display_name:
            return name, value
        if name.lower() == "list-id" and isinstance(value, str):
            if not value.isascii() or not value.isprintable():  # no line breaks, no raw UTF-8
                raise ValueError(f"List-Id must be printable ASCII (personalize.list_id_header): {value!r}")
            return name, _Verbatim(value)
        if name.lower() == "subject" and isinstance(value, str) and "=?" in value:
            if "\r" in value or "\n" in value:
                raise ValueError("Header values may not contain linefeed or carriage return characters")
            return name, _Literal(value)
        return super().header_store_parse(name, value)

    def header_fetch_parse(self, name: str, value: Any) -> Any:
        if isinstance(value, (Address, _Literal)):
            return value  # as given (see header_store_parse), not decoded
        return super().header_fetch_parse(name, value)

    def _literal(self, name: str, value: Address | _Literal) -> str:
        """To or Subject holding text that looks like an encoded word, encoded whole."""
        if isinstance(value, _Literal):
            return self._subject(name, value)
        bare = self.header_factory(name, Address(username=value.username, domain=value.domain))
        address = bare.fold(policy=self)[len(name) + 2 : -len(self.linesep)]  # as the policy writes it
        encoded = Header(value.display_name, "utf-8", header_name=name).encode(linesep=self.linesep)
        return f"{name}: {encoded} <{address}>{self.linesep}"

    def fold(self, name: str, value: str) -> str:
        if name.lower() == "list-unsubscribe":
            return self._verbatim(name, value)
        if isinstance(value, _Verbatim):
            return self._words(name, value)
        if isinstance(value, (Address, _Literal)):
            return self._literal(name, value)
        if name.lower() == "subject" and not str(value).isascii():
            return self._subject(name, value)
        return super().fold(name, value)

    def fold_binary(self, name: str, value: str) -> bytes:
        if name.lower() == "list-unsubscribe":
            return self._verbatim(name, value).encode("ascii", "surrogateescape")
        if isinstance(value, _Verbatim):
            return self._words(name, value).encode("ascii")
        if isinstance(value, (Address, _Literal)):
            return self._literal(name, value).encode("utf-8" if self.utf8 else "ascii", "surrogateescape")
        if name.lower() == "subject" and not str(value).isascii():
            return self._subject(name, value).encode("ascii")
        return super().fold_binary(name, value)


POLICY = _MailPolicy()
# smtplib.send_message serialized with the message's policy and CRLF, plus utf8=True for SMTPUTF8
# (key: utf8); providers/smtp/data.py folds through the same policies
WIRE = {False: POLICY.clone(linesep="\r\n"), True: POLICY.clone(linesep="\r\n", utf8=True)}


def _headers(envelope: Envelope, p: Personalization, subject: str) -> list[tuple[str, object]]:
    """One recipient's top-level headers, in order, as assigned (the policy parses them)."""
    # username/domain, not addr_spec: addr_spec refuses a non-ASCII local part even for SMTPUTF8
    local, _, domain = p.email.rpartition("@")
    headers: list[tuple[str, object]] = [
        ("From", formataddr((envelope.from_name, envelope.from_email))),
        ("To", Address(display_name=p.name, username=local, domain=domain) if p.name else p.email),
    ]
    if envelope.reply_to:
        headers.append(("Reply-To", envelope.reply_to))
    headers += [
        ("Subject", subject),
        ("Date", formatdate(localtime=False, usegmt=True)),
        ("Message-ID", make_msgid(domain=envelope.from_email.rpartition("@")[2] or None)),
        ("X-Newsletter-Issue", envelope.issue_id),
    ]
    if envelope.list_id:  # the same for every reader: providers/smtp/data.py folds it once
        headers.append(("List-Id", envelope.list_id))
    headers += p.headers.items()
    return headers


def build_message(envelope: Envelope, p: Personalization) -> EmailMessage:
    """The complete message for one recipient, headers included (RFC 5322, RFC 8058)."""
    subject, html, text = envelope.fill(p)
    msg = EmailMessage(policy=POLICY)
    for name, value in _headers(envelope, p, subject):
        msg[name] = value
    # text first, HTML last: clients show the last alternative they can render
    # decided once per issue on the shared parts: personal values do not change the balance
    msg.set_content(text, subtype="plain", charset="utf-8", cte=transfer_encoding(envelope.text))
    msg.add_alternative(html, subtype="html", charset="utf-8", cte=transfer_encoding(envelope.html))
    return msg


def message_bytes(
    envelope: Envelope, p: Personalization, *, utf8: bool = False
) -> tuple[bytes, str]:
    """(message, Message-ID): what smtplib.send_message(build_message(envelope, p)) sent, with CRLF
    line endings, in ~0.5 ms instead of ~3 (the email package encodes bodies and serializes them
    in pure Python). utf8: serialize for SMTPUTF8, as send_message did for a non-ASCII address.

    Each header goes through the same policy, so it is byte for byte build_message's; the bodies
    are encoded by the C codecs and spliced into a skeleton made once per pair of encodings. base64 comes
    out identical; quoted-printable may break lines elsewhere but decodes to the same text."""
    subject, html, text = envelope.fill(p)
    headers = _headers(envelope, p, subject)
    policy = WIRE[utf8]
    chunks = []
    for name, value in headers:
        if isinstance(value, str):  # From, Subject, Date (for a second)...: the same every time
            chunks.append(fold(name, value, utf8))
        else:  # To with a name (an Address: unhashable, and one per reader anyway)
            chunks.append(policy.fold_binary(*policy.header_store_parse(name, value)))
    text_cte, html_cte = transfer_encoding(envelope.text), transfer_encoding(envelope.html)
    before, between, after = skeleton(text_cte, html_cte)
    chunks += [before, _encode(text, text_cte), between, _encode(html, html_cte), after]
    return b"".join(chunks), str(dict(headers)["Message-ID"])


@lru_cache(maxsize=64)  # the repeating values stay; unique ones (Message-ID) soon drop out
def fold(name: str, value: str, utf8: bool = False) -> bytes:
    """One header as the policy writes it (parsing and folding From alone take ~0.13 ms)."""
    policy = WIRE[utf8]
    return policy.fold_binary(*policy.header_store_parse(name, value))


_Skeleton = tuple[bytes, bytes, bytes]  # before the text body, between the two, after the HTML


@lru_cache(maxsize=4)  # a pure function of the two encodings: four possible skeletons in all
def skeleton(text_cte: str, html_cte: str) -> _Skeleton:
    """Everything after the top-level headers but the two bodies, for these transfer encodings."""
    # build_message's own calls, flattened the way send_message did: MIME-Version, Content-Type,
    # the part headers (MIME-Version in the HTML part too), blank lines and delimiters are its own
    msg = EmailMessage(policy=POLICY)
    msg.set_content("", subtype="plain", charset="utf-8", cte=text_cte)
    msg.add_alternative("", subtype="html", charset="utf-8", cte=html_cte)
    text_part, html_part = msg.iter_parts()
    text_part.set_payload("\0text\0")
    html_part.set_payload("\0html\0")
    # One boundary for every message is safe: the generator's look like
    # "===============<19 digits>==", so a delimiter line starts with "--==". base64 has no "-",
    # and in quoted-printable "=" is always followed by two hex digits or the line end: no body
    # line can ever be taken for a delimiter, whatever a reader's values.
    before, rest = msg.as_bytes(policy=WIRE[False]).split(b"\0text\0")
    between, after = rest.split(b"\0html\0")
    return before, between, after


def _encode(body: str, cte: str) -> bytes:
    """One body encoded as set_content does, with CRLF line endings."""
    data = body.encode("utf-8")
    if b"\r" in data:  # set_content turns "\r\n" and "\r" into "\n" (the test is 100x cheaper)
        data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    if not data.endswith(b"\n"):  # and ends the last line
        data += b"\n"
    encoded = base64.encodebytes(data) if cte == "base64" else quopri.encodestring(data)
    return encoded.replace(b"\n", b"\r\n")


@lru_cache(maxsize=16)
def transfer_encoding(body: str) -> str:
    """The smaller of quoted-printable and base64 for this body.

    Quoted-printable turns each non-ASCII byte, and each "=" of the HTML's attributes, into three
    (a Cyrillic letter: 2 bytes -> 6): the Russian example's HTML grew from 62 KB to 89 KB in
    transit. base64 costs a flat ~37 %."""
    data = body.encode("utf-8")
    qp = len(quopri.encodestring(data))
    b64 = len(base64.encodebytes(data))
    return "base64" if b64 < qp else "quoted-printable"

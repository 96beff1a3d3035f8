"""Each reader's message as SMTP DATA bytes, from a template made once per issue.

mime.message_bytes builds a message in ~1.7 ms here, ~5x the time the bytes take on the wire: it
folds every header through the email policy and base64-encodes the whole 67 KB HTML part in a
Python loop of 57-byte lines; dot-stuffing the result with a regular expression took another
~1.4 ms. Here the parts that are the same for every reader are encoded (and dot-stuffed, with CRLF)
once, and per reader only the few bytes around its values are. The bytes are exactly what
message_bytes gives, dot-stuffed (tests/test_smtp_data.py compares them); whatever the fast path
does not cover (an SMTPUTF8 message, a carriage return in a value, a name the folder might fold)
goes through message_bytes itself.
"""

from __future__ import annotations

import email._encoded_words as _ew  # type: ignore[import-not-found]  # the folder's own encoder
import quopri
import re
import threading
import time
from binascii import b2a_base64
from email.headerregistry import Address
from email.utils import formataddr
from functools import lru_cache

from ... import mime
from ...config import ATOM
from ...merge import Filler
from ...message import Envelope, Personalization

_LINE = 57  # bytes of input per base64 line (base64.encodebytes: 76 characters)
_MAX = 78  # a header line the policy never folds (max_line_length)
_ASCII_WORD = re.compile(r"[A-Za-z0-9'-]+")  # an atom the folder writes as it is
_MSG_ID = re.compile(r"<[A-Za-z0-9._-]+@[A-Za-z0-9.-]+>")  # make_msgid's shape
# a dot-atom address (RFC 5322 3.2.3): written as it is, in <>, by the folder and smtplib.quoteaddr
DOT_ATOM = re.compile(rf"{ATOM}(?:\.{ATOM})*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*")


def dot_stuff(data: bytes) -> bytes:
    """SMTP transparency (RFC 5321 4.5.2): a line starting with "." gets another. What
    re.sub(rb"(?m)^\\.", b"..", data) does, at C speed."""
    data = data.replace(b"\n.", b"\n..")
    return b"." + data if data.startswith(b".") else data


def _crlf_stuffed(encoded: bytes) -> bytes:
    """Encoder output (LF line ends, starting at a line start) as it goes on the wire."""
    return dot_stuff(encoded.replace(b"\n", b"\r\n"))


def _normalized(text: str) -> bytes:
    """What mime._encode does to a body's line ends, on one piece of it."""
    data = text.encode("utf-8")
    if b"\r" in data:
        data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    return data


class _Body:
    """One body (text or HTML) with its slots, encoded as mime._encode encodes the filled body.

    Both encodings are local: base64 turns each 57-byte run of input into one line, quoted-printable
    each input line into one or more lines. So a literal stretch between two values encodes the same
    for every reader whose values put it at the same place in a line: base64 keeps one encoding per
    offset (of 57, made when first needed), quoted-printable one for its whole lines."""

    def __init__(self, filler: Filler, cte: str):
        self.cte = cte
        self.slots = filler.slots
        self.literals = [_normalized(lit) for lit in filler.literals]
        # a literal ending in "\r" whose next piece starts with "\n" would become one line end in the
        # filled body and two here: such a body is left to message_bytes
        self.usable = not any(lit.endswith("\r") for lit in filler.literals[:-1])
        self._middles: dict[tuple[int, int], bytes] = {}  # base64: (literal, offset) -> lines
        self._lines: list[tuple[bytes, bytes, bytes] | None] = []  # quoted-printable: see below
        if cte != "base64":
            for lit in self.literals:
                first, last = lit.find(b"\n"), lit.rfind(b"\n")
                # (up to its first line end, its whole lines encoded, after its last line end)
                self._lines.append(None if first < 0 else (
                    lit[: first + 1], _crlf_stuffed(quopri.encodestring(lit[first + 1 : last + 1])),
                    lit[last + 1 :]))

    def encode(self, values: tuple[str, ...]) -> list[bytes]:
        """The body filled with `values`, encoded, CRLF, dot-stuffed, in pieces to join."""
        out: list[bytes] = []
        pending = b""  # bytes not encoded yet: they start a line of output
        last = b""  # the body's last byte so far: it must end with a line end
        for i, lit in enumerate(self.literals):
            if i:
                value = values[self.slots[i - 1]].encode("utf-8")
                pending += value
                last = value[-1:] or last
            last = lit[-1:] or last
            if self.cte == "base64":
                pending = self._base64(i, lit, pending, out)
            else:
                pending = self._qp(i, lit, pending, out)
        if last != b"\n":
            pending += b"\n"
        if pending:
            out.append(self._encode(pending))
        return out

    def stuffed(self, pieces: list[bytes]) -> int:
        """Dots that stuffing added to `pieces` (each starts a line): one per line that starts with
        ".." now. Quoted-printable lines can start with "."; base64 has no "." at all."""
        if self.cte == "base64":
            return 0
        return sum(piece.count(b"\n..") + piece.startswith(b"..") for piece in pieces)

    def _encode(self, data: bytes) -> bytes:
        if self.cte == "base64":  # base64.encodebytes, with CRLF; no "." in base64
            return b"".join([b2a_base64(data[i : i + _LINE])[:-1] + b"\r\n" for i in range(0, len(data), _LINE)])
        return _crlf_stuffed(quopri.encodestring(data))

    def _base64(self, i: int, lit: bytes, pending: bytes, out: list[bytes]) -> bytes:
        head = -len(pending) % _LINE  # bytes of `lit` that complete the line `pending` began
        lines = (len(lit) - head) // _LINE
        if lines <= 0:
            return pending + lit
        if pending or head:
            out.append(self._encode(pending + lit[:head]))
        end = head + lines * _LINE
        middle = self._middles.get((i, head))
        if middle is None:
            middle = self._middles[(i, head)] = self._encode(lit[head:end])
        out.append(middle)
        return lit[end:]

    def _qp(self, i: int, lit: bytes, pending: bytes, out: list[bytes]) -> bytes:
        lines = self._lines[i]
        if lines is None:  # no line end: all of it goes with the line in progress
            return pending + lit
        head, middle, tail = lines
        out.append(self._encode(pending + head))
        out.append(middle)
        return tail


class DataTemplate:
    """One send's messages, each as the bytes between DATA and its final ".": dot-stuffed, CRLF."""

    def __init__(self, envelope: Envelope):
        self.envelope = envelope
        _, html, text = envelope.fillers
        text_cte, html_cte = mime.transfer_encoding(envelope.text), mime.transfer_encoding(envelope.html)
        self.text = _Body(text, text_cte)
        self.html = _Body(html, html_cte)
        self.before, self.between, self.after = mime.skeleton(text_cte, html_cte)
        self.domain = envelope.from_email.rpartition("@")[2] or None
        self._date: tuple[int, bytes] = (-1, b"")
        # the headers that are the same for every reader, folded once (From, before To)
        self.sender = mime.fold("From", formataddr((envelope.from_name, envelope.from_email)))
        self.reply_to = mime.fold("Reply-To", envelope.reply_to) if envelope.reply_to else b""
        self.subject = None if envelope.fillers[0].slots else mime.fold("Subject", envelope.subject)
        self.issue = mime.fold("X-Newsletter-Issue", envelope.issue_id)
        self.list_id = mime.fold("List-Id", envelope.list_id) if envelope.list_id else b""

    def data(self, p: Personalization, *, utf8: bool = False) -> tuple[bytes, int, str]:
        """(DATA bytes, message size for SIZE=, Message-ID) of `p`'s copy: message_bytes(p, utf8),
        dot-stuffed. Raises what message_bytes raises for values no message can carry."""
        env = self.envelope
        if utf8 or not (self.text.usable and self.html.usable) or "\r" in "".join(p.raw + p.escaped):
            raw, message_id = mime.message_bytes(env, p, utf8=utf8)
            return dot_stuff(raw), len(raw), message_id
        subject = self.subject or mime.fold("Subject", env.fillers[0].fill(p.raw))
        message_id = mime.make_msgid(domain=self.domain)  # mime's (and formatdate), as tests fix both
        chunks = [self.sender, _to(p.name, p.email) if p.name else mime.fold("To", p.email),
                  self.reply_to, subject, self._date_header(), _ascii_header("Message-ID", message_id),
                  self.issue, self.list_id]
        for name, value in p.headers.items():
            if name.lower() == "list-unsubscribe":
                chunks.append(_list_unsubscribe(name, value))
            else:
                chunks.append(mime.fold(name, value))
        head = b"".join(chunks)
        added = 0  # dots added by stuffing: SIZE= counts the message without them
        if b"\n." in head:  # folding never starts a line with "." (nor does a header name): safety
            stuffed = dot_stuff(head)
            head, added = stuffed, len(stuffed) - len(head)
        text = self.text.encode(p.raw)  # the text takes the values raw, the HTML HTML-escaped
        html = self.html.encode(p.escaped)
        data = b"".join([head, self.before, *text, self.between, *html, self.after])
        return data, len(data) - added - self.text.stuffed(text) - self.html.stuffed(html), message_id

    def _date_header(self) -> bytes:
        """Date, folded once a second (what formatdate() gives for now: the second, no fraction)."""
        second = int(time.time())
        if self._date[0] != second:
            date = mime.formatdate(second, localtime=False, usegmt=True)
            self._date = (second, mime.fold("Date", date))
        return self._date[1]


def _ascii_header(name: str, value: str) -> bytes:
    """A short <id@domain> header the policy writes as it is (a Message-ID); others go through it."""
    line = f"{name}: {value}"
    if len(line) <= _MAX and _MSG_ID.fullmatch(value):
        return line.encode("ascii") + b"\r\n"
    return mime.WIRE[False].fold_binary(*mime.WIRE[False].header_store_parse(name, value))


def _list_unsubscribe(name: str, value: str) -> bytes:
    """mime's own List-Unsubscribe folding, without the header parser that only gives the value
    back (when it holds no encoded word for the parser to decode)."""
    if value.isascii() and value.isprintable() and "=?" not in value:
        return mime.WIRE[False]._verbatim(name, value).encode("ascii")
    return mime.fold(name, value)


def _to(name: str, email: str) -> bytes:
    """To: with a display name, as the policy folds Address(name, ...) for a non-SMTPUTF8 message,
    for the names whose folding is simple: non-ASCII words (one encoded word, the shorter of "q" and
    "b") and then plain ASCII words, on one line of at most 78 characters. Else the policy itself."""
    words = name.split(" ")
    k = 0
    while k < len(words) and not words[k].isascii():
        k += 1
    if DOT_ATOM.fullmatch(email) and all(_ASCII_WORD.fullmatch(w) for w in words[k:]) and all(
        c.isprintable() and not c.isspace() and (not c.isascii() or _ASCII_WORD.fullmatch(c))
        for w in words[:k] for c in w
    ) and all(words[:k]):
        parts = ([_encoded_word(" ".join(words[:k]))] if k else []) + words[k:]
        line = "To: " + " ".join(parts) + f" <{email}>"
        if len(line) <= _MAX:
            return line.encode("ascii") + b"\r\n"
    return _to_policy(name, email)


@lru_cache(maxsize=4096)  # first names repeat, in a list of any size
def _encoded_word(text: str) -> str:
    return _ew.encode(text, "utf-8")


def _to_policy(name: str, email: str) -> bytes:
    """To: as message_bytes writes it (utf8=False)."""
    local, _, domain = email.rpartition("@")
    policy = mime.WIRE[False]
    return policy.fold_binary(*policy.header_store_parse(
        "To", Address(display_name=name, username=local, domain=domain)))


def template_for(envelope: Envelope) -> DataTemplate:
    """The template of `envelope`, one for all the connections of a send (an Envelope hashes and
    compares by its content). Under a lock: the connections start at once, and lru_cache alone
    let each of them make its own, and encode each body once per offset four times over."""
    with _TEMPLATES_LOCK:
        return _template(envelope)


@lru_cache(maxsize=4)
def _template(envelope: Envelope) -> DataTemplate:
    return DataTemplate(envelope)


_TEMPLATES_LOCK = threading.Lock()

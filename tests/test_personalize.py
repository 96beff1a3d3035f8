"""Per-recipient values: signed unsubscribe links and the headers mailbox providers act on."""

from __future__ import annotations

import base64
import hashlib
import hmac

from conftest import SMALL_ISSUE
from newsletter import tokens
from newsletter.config import load_settings
from newsletter.issue import parse_issue
from newsletter.personalize import Personalizer, unsubscribe_token, verify_unsubscribe_token
from newsletter.render import Renderer
from newsletter.subscribers import Subscriber


def reader(email="Anna.P@example.com", name="Anna & <Co>"):
    return Subscriber(email, name, "subscribed", {"email": email, "name": name}, 2)


def personalizer(project, provider="smtp", env=None):
    settings = load_settings(project.root / "newsletter.toml", env=env or {})
    rendered = Renderer(settings).render(parse_issue(SMALL_ISSUE, "x.yaml"), "2021-03")
    return Personalizer(rendered, settings, "k3y", provider=provider)


def test_tokens_verify_only_for_their_address_and_key():
    token = unsubscribe_token("k3y", "Anna.P@example.com")
    assert verify_unsubscribe_token("k3y", "anna.p@EXAMPLE.com", token)  # case-insensitive address
    assert not verify_unsubscribe_token("k3y", "bob@example.com", token)
    assert not verify_unsubscribe_token("other", "Anna.P@example.com", token)
    assert not verify_unsubscribe_token("k3y", "Anna.P@example.com", token[:-1] + "A")


def test_tokens_live_in_tokens_py_and_personalize_reexports_them():
    assert verify_unsubscribe_token is tokens.verify_unsubscribe_token
    assert unsubscribe_token is tokens.unsubscribe_token


def test_malformed_input_is_refused_never_an_error():
    good = unsubscribe_token("k3y", "anna@example.com")
    assert len(good) == tokens.TOKEN_LENGTH and verify_unsubscribe_token("k3y", "anna@example.com", good)
    for bad in (None, 42, b"bytes", "", good[:-1], good[:8], good + "A", "é" * 22, "ü" + good[1:],
                good[:-1] + "=", " " + good[1:], "\x00" * 22, "\udcff" + good[1:], good + "\n"):
        assert verify_unsubscribe_token("k3y", "anna@example.com", bad) is False, bad
    for address in (None, 42, "\udcff@example.com", "other@example.com", ""):
        assert verify_unsubscribe_token("k3y", address, good) is False, address
    for secret in (None, "", 42):
        assert verify_unsubscribe_token(secret, "anna@example.com", good) is False


def test_tokens_sign_the_address_key():
    key = "k3y"
    assert unsubscribe_token(key, "straße@example.com") != unsubscribe_token(key, "strasse@example.com")
    assert verify_unsubscribe_token(key, "CHEN@EXAMPLE.COM", unsubscribe_token(key, "chen@example.com"))
    assert not verify_unsubscribe_token(key, "Ünal@example.com", unsubscribe_token(key, "ünal@example.com"))
    # links sent before address_key (signed on email.casefold()) still verify for ASCII addresses
    old = base64.urlsafe_b64encode(hmac.new(b"k3y", b"anna.p@example.com", hashlib.sha256).digest()[:16])
    assert verify_unsubscribe_token(key, "Anna.P@Example.com", old.rstrip(b"=").decode())


def test_each_reader_gets_own_link_and_one_click_headers(project):
    p = personalizer(project)(reader())
    url = p.raw[0]
    assert url.startswith("https://example.org/unsubscribe?email=Anna.P@example.com&token=")
    assert verify_unsubscribe_token("k3y", p.email, url.rsplit("=", 1)[1])
    assert p.headers["List-Unsubscribe"] == (
        f"<{url}>, <mailto:unsubscribe@example.org?subject=unsubscribe%20Anna.P%40example.com>")
    assert p.headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert p.escaped[0] == url.replace("&", "&amp;")
    # merge-field values: raw for the text part, escaped for the HTML part
    assert "Anna & <Co>" in p.raw and "Anna &amp; &lt;Co&gt;" in p.escaped


def test_test_copies_unsubscribe_the_preview_address_not_the_reader(project):
    pz = personalizer(project)
    p = pz(reader(), to="editor@example.org")
    assert p.email == "editor@example.org" and "email=editor@example.org" in p.raw[0]
    assert "Anna & <Co>" in p.raw  # but the reader's fields fill the merge fields
    assert Personalizer(pz.rendered, pz.settings, "k", provider="smtp", test=True).envelope().subject.startswith("[TEST] ")


def test_sendgrid_unsubscribe_group_replaces_our_link(project):
    env = {"NEWSLETTER_UNSUBSCRIBE_URL": ""}
    cfg = project.root / "newsletter.toml"
    cfg.write_text(cfg.read_text().replace('unsubscribe_url = "https://example.org/unsubscribe?email={email}&token={token}"\n', "")
                   + "\n[sendgrid]\nasm_group_id = 42\n")
    p = personalizer(project, provider="sendgrid", env=env)(reader())
    assert p.raw[0] == p.escaped[0] == "<%asm_group_unsubscribe_raw_url%>"  # SendGrid's tag, verbatim
    assert p.headers == {}  # SendGrid adds its own List-Unsubscribe
    # the same settings through SMTP: no SendGrid tag may leak into the mail
    p = personalizer(project, provider="smtp", env=env)(reader())
    assert "asm_group" not in p.raw[0] and "asm_group" not in p.escaped[0]


def _reference(p, sub, to=None):
    """What Personalizer.__call__ made before its per-reader work was prepared once (issue 11)."""
    import html
    from urllib.parse import quote

    address = to or sub.email
    if not p.url_template:
        url = p.provider_tag or ""
    else:
        url = p.url_template.format(email=quote(address, safe="@"), token=unsubscribe_token(p.secret, address))
    raw = [url] + [f.evaluate(sub.fields) for f in p.rendered.fields]
    escaped = [html.escape(v) for v in raw]
    if p.provider_tag and url == p.provider_tag:
        escaped[0] = url
        headers = {}
    else:
        links = []
        if url.startswith("https://"):
            links.append(f"<{url}>")
        if p.mailto:
            links.append(f"<mailto:{p.mailto}?subject={quote('unsubscribe ' + address)}>")
        headers = {"List-Unsubscribe": ", ".join(links)} if links else {}
        if url.startswith("https://"):
            headers["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    return address, "" if to else sub.name, tuple(raw), tuple(escaped), headers


TRICKY_ADDRESSES = ["anna@example.com", "Anna.P+tag@Example.com", "a/b@example.com", "o'neil@example.com",
                    "a&b@example.com", "x%y@example.com", "пользователь@пример.рф", "anna@bücher.de",
                    "straße@example.com", "a~b_c.d-e@example.com", '"a b"@example.com', "a=b?c@example.com"]


def test_personalizations_are_what_they_were_before_the_fast_path(project):
    base = personalizer(project)
    templates = ["https://example.org/unsubscribe?email={email}&token={token}",
                 "https://example.org/u/{token}?e={email}&x='1'<>", "http://example.org/u?t={token}",
                 "https://example.org/u?e={email!s}&t={token:>30}", "https://example.org/{{literal}}/{token}"]
    for template in templates:
        for mailto in ("unsubscribe@example.org", None):
            # set past the settings' validation: the fill path must hold for any template
            settings = base.settings.model_copy(update={"unsubscribe_url": template, "unsubscribe_mailto": mailto})
            p = Personalizer(base.rendered, settings, "k3y", provider="smtp")
            assert p.url_template == template
            for email in TRICKY_ADDRESSES:
                for name in ("", "Anna & <Co>", "Zoë"):
                    sub = Subscriber(email, name, "subscribed", {"email": email, "name": name}, 2)
                    for to in (None, "preview+x@example.com", email.upper()):
                        got = p(sub, to=to)
                        assert (got.email, got.name, got.raw, got.escaped, got.headers) == _reference(p, sub, to)


def test_token_signer_is_hmac_sha256_for_every_key_length():
    for secret in ("k", "k3y" * 21 + "x", "k" * 64, "k" * 65, "é" * 40, "\udcff\udcfe-raw-bytes", "x" * 500):
        sign = tokens.token_signer(secret)
        for email in ("anna@example.com", "пользователь@пример.рф", ""):
            raw = secret.encode("utf-8", "surrogateescape")
            expected = base64.urlsafe_b64encode(hmac.new(raw, email.encode(), hashlib.sha256).digest()[:16])
            assert sign(email) == expected.rstrip(b"=").decode()


def test_a_dry_run_fills_every_readers_merge_fields_and_personalizes_its_samples_whole(project):
    """whole=2: the first two readers (the dry run's samples) get their link and headers; every other
    reader is listed with the merge fields filled from their own row, as a send would fill them."""
    base = personalizer(project)
    subs = [reader(f"r{i}@example.com", f"Reader {i}" if i % 2 else "") for i in range(5)]
    p = Personalizer(base.rendered, base.settings, "k3y", provider="smtp", whole=2)
    got = p.batch(subs[:1]) + p.batch(subs[1:])
    for sub, made in zip(subs[:2], got[:2]):
        want = base(sub)
        assert (made.raw, made.escaped, made.headers, made.unsubscribe) == (want.raw, want.escaped, want.headers,
                                                                            want.unsubscribe)
    for sub, listed in zip(subs[2:], got[2:]):
        assert (listed.email, listed.name, listed.line) == (sub.email, sub.name, sub.line)
        assert listed.raw[1:] == base(sub).raw[1:]  # the merge fields, from this reader's row
        assert listed.raw[0] == "" and listed.escaped == () and listed.headers == {}  # no message to send
    assert [x.raw[1:] for x in Personalizer(base.rendered, base.settings, "k3y", provider="smtp").batch(subs)] \
        == [x.raw[1:] for x in got]  # without `whole`, every reader whole: the same values

"""Secrets hidden in text and bytes: literal, JSON-escaped, inside URLs and aiohttp's own errors."""

from __future__ import annotations

import json
import re

import aiohttp
import orjson
import pytest

from pipeline.model.client import make_session
from pipeline.model.retry import classify_transport
from pipeline.redact import Redactor, basic_token, show_url, show_value, split_url

KEY = "sk-live/9f8e7d6c5b4a"


@pytest.mark.parametrize(
    ("url", "clean", "credentials"),
    [
        ("http://user:pw@127.0.0.1:8000/v1", "http://127.0.0.1:8000/v1", "user:pw"),
        ("https://u%40x:p%2Fw%3A1@proxy/v1", "https://proxy/v1", "u@x:p/w:1"),
        ("http://token@[::1]:8000/v1", "http://[::1]:8000/v1", "token:"),
        ("https://api.openai.com/v1", "https://api.openai.com/v1", None),
    ],
)
def test_split_url_takes_the_credentials_out(url, clean, credentials):
    assert split_url(url) == (clean, credentials)


def test_basic_token_is_rfc_7617():
    assert basic_token("Aladdin:open sesame") == "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ=="


def test_show_url_hides_every_password_and_lone_user():
    text = "to 'http://u:p:w@d@h/v1' then https://TOKEN@h2/x, not http://h3/v1 or a@b"
    assert show_url(text) == "to 'http://u:***@h/v1' then https://***@h2/x, not http://h3/v1 or a@b"
    assert show_value("user:PW@localhost:8000/v1") == "***@localhost:8000/v1"  # no scheme
    assert show_value("7") == "7"


def _escaped(secret: str, upper: bool) -> str:
    """Every character as \\uXXXX, in one hex case."""
    return "".join(f"\\u{ord(c):04X}" if upper else f"\\u{ord(c):04x}" for c in secret)


@pytest.mark.parametrize(
    "form",
    [
        KEY,
        KEY.replace("/", "\\/"),
        "\\u0073k-live\\/9f8e7d6c5b4a",
        "\\u0073\\u006B-live\\u002F9f8e7d6c5b4a",
        _escaped(KEY, upper=False),
        _escaped(KEY, upper=True),
    ],
)
def test_every_json_spelling_of_a_secret_is_masked(form):
    redact = Redactor(KEY)
    body = b'{"error": {"message": "bad key ' + form.encode() + b' sent"}}'
    assert orjson.loads(body)["error"]["message"] == f"bad key {KEY} sent"  # what it decodes to
    assert redact.bytes(body) == b'{"error": {"message": "bad key *** sent"}}'
    assert redact.text(body.decode()) == '{"error": {"message": "bad key *** sent"}}'


def test_non_ascii_and_astral_passwords_and_json_escapes():
    password = 'pä"ss\\wörd😀'
    redact = Redactor(password)
    ascii_form = json.dumps(password)[1:-1]  # \u00e4, \ud83d\ude00 (a surrogate pair), \" and \\
    upper_hex = re.sub(r"\\u[0-9a-f]{4}", lambda m: "\\u" + m.group()[2:].upper(), ascii_form)
    forms = (password, ascii_form, upper_hex, json.dumps(password, ensure_ascii=False)[1:-1])
    for form in forms:
        assert redact.text(f"x {form} y") == "x *** y", form
        assert redact.bytes(f"x {form} y".encode()) == b"x *** y", form


def test_the_longest_secret_is_masked_whole_and_nothing_else_changes():
    redact = Redactor("abc", "abcdef", None, "")
    assert redact.text("abcdef abc ab") == "*** *** ab"
    assert Redactor().text("plain http://h/v1") == "plain http://h/v1"
    assert Redactor().bytes(b"\xff raw") == b"\xff raw"


@pytest.mark.parametrize(
    ("url", "kind"),
    [
        ("http://user:PW-4f2a@127.0.0.1:99999/v1", aiohttp.InvalidUrlClientError),
        ("ftp://user:PW-4f2a@127.0.0.1/v1", aiohttp.NonHttpUrlClientError),
    ],
)
async def test_aiohttp_errors_that_quote_the_url_are_masked(url, kind):
    async with make_session(1) as session:
        with pytest.raises(kind) as info:
            await session.post(url, data=b"{}")
    assert "PW-4f2a" in str(info.value)  # aiohttp itself quotes the password
    error = classify_transport(info.value, where=f"generic {url}")
    shown = Redactor().text(str(error))
    assert "PW-4f2a" not in shown
    assert "user:***@127.0.0.1" in shown

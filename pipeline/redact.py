"""Hide secrets in text and bytes, and show a URL without its password.

`split_url` takes the credentials out of a base URL, once, where the configuration is built.
`Redactor` replaces the known secrets (API key, the URL's password, the Basic token made of them)
wherever they appear, literally or JSON-escaped (`\\/`, `\\uXXXX` in either hex case), and hides
the password of any URL in a text. Everything a server sends passes through it before it can
reach a message, a results row or the cache.
"""

from __future__ import annotations

import base64
import json
import re
from urllib.parse import unquote, urlsplit, urlunsplit

from pipeline.errors import APIError

MASK = "***"
# scheme://userinfo@ — up to the last "@" of the word, as urllib reads the authority.
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)([^\s'\"<>]*)@")


def split_url(url: str) -> tuple[str, str | None]:
    """Return (the URL without credentials, "user:password" percent-decoded, or None)."""
    parts = urlsplit(url)
    userinfo, at, host = parts.netloc.rpartition("@")
    if not at:
        return url, None
    user, _, password = userinfo.partition(":")
    return urlunsplit(parts._replace(netloc=host)), f"{unquote(user)}:{unquote(password)}"


def basic_token(credentials: str) -> str:
    """Return the `Authorization: Basic` value for "user:password" (UTF-8, RFC 7617)."""
    return "Basic " + base64.b64encode(credentials.encode()).decode()


def show_url(text: str) -> str:
    """Return `text` with the password (or lone user name) of every URL in it replaced by ***."""

    def hide(match: re.Match[str]) -> str:
        user, colon, _ = match.group(2).partition(":")
        return f"{match.group(1)}{user + colon if colon else ''}{MASK}@"

    return _USERINFO.sub(hide, text)


def show_value(value: str) -> str:
    """Return a setting's value fit to echo: a URL's password hidden, even with no scheme."""
    if "@" in value and "://" not in value:
        return f"{MASK}@{value.rpartition('@')[2]}"
    return show_url(value)


class Redactor:
    """Replace known secrets in text and bytes, literal or JSON-escaped, and URL passwords."""

    def __init__(self, *secrets: str | None) -> None:
        # Longest first, so a secret that contains another is masked whole.
        known = sorted({s for s in secrets if s}, key=len, reverse=True)
        pattern = "|".join("".join(_char_forms(c) for c in s) for s in known)
        self._text = re.compile(pattern) if pattern else None
        self._bytes = re.compile(pattern.encode()) if pattern else None
        # Every escaped form holds a backslash: without one, only a literal secret can match,
        # and a substring test (far cheaper than the regex) says whether one is there.
        self._literal_text = known
        self._literal_bytes = [s.encode() for s in known]

    def text(self, text: str) -> str:
        """Return `text` with every secret and URL password masked."""
        if self._text is not None and ("\\" in text or any(s in text for s in self._literal_text)):
            text = self._text.sub(MASK, text)
        return show_url(text) if "@" in text else text

    def maybe(self, text: str | None) -> str | None:
        """Return `text` masked, or None."""
        return None if text is None else self.text(text)

    def error(self, exc: APIError) -> APIError:
        """Return the same kind of API error with every secret masked in what it says."""
        return type(exc)(
            self.text(exc.message),
            status=exc.status,
            code=self.maybe(exc.code),
            retry_after=exc.retry_after,
            request_id=self.maybe(exc.request_id),
        )

    def bytes(self, data: bytes) -> bytes:
        """Return `data` with every secret masked (a server body, before it is parsed)."""
        if self._bytes is None or (
            b"\\" not in data and not any(s in data for s in self._literal_bytes)
        ):
            return data
        return self._bytes.sub(MASK.encode(), data)


def _char_forms(char: str) -> str:
    """Return a regex matching one character as written in text or in a JSON string."""
    code = ord(char)
    units = [code] if code < 0x10000 else [0xD7C0 + (code >> 10), 0xDC00 + (code & 0x3FF)]
    forms = {
        re.escape(char),  # as is
        re.escape(json.dumps(char)[1:-1]),  # JSON's own escape: \" \\ \n …
        "".join(_unicode_escape(u) for u in units),  # \uXXXX; a surrogate pair past U+FFFF
    }
    if char == "/":
        forms.add(r"\\/")  # allowed in JSON, and what PHP-style encoders write
    return "(?:" + "|".join(sorted(forms)) + ")"


def _unicode_escape(unit: int) -> str:
    """Return a regex matching `\\uXXXX` for one UTF-16 unit, its hex digits in either case."""
    return r"\\u" + "".join(d if d.isdigit() else f"[{d}{d.upper()}]" for d in f"{unit:04x}")

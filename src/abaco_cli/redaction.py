"""One redaction: secrets out of DSNs, free text and JSON-ready data, by parsing.

Every place that prints, logs, audits or serialises something that may hold a secret goes
through a :class:`Redactor`: error messages, log lines, audit records, ``config show`` and
JSON output. A DSN's secrets are found by parsing it (libpq URL or ``key=value`` string): the
value of every secret libpq parameter (:data:`SECRET_PARAMETERS`) and the password of a URL's
``user:password@``. In free text, embedded URLs and ``key=value`` fragments with a secret key
are parsed the same way, and a known secret value is replaced only where it stands as a whole
token, never inside a longer one: with the password ``2025`` the path
``dpd/loans/as_of_date=2025-12-31/dpd_loans_2025-12-31.csv`` stays as it is.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, TypeVar, cast
from urllib.parse import quote, unquote

import psycopg
from psycopg import pq
from psycopg.conninfo import conninfo_to_dict, make_conninfo

if TYPE_CHECKING:
    from abaco_cli.settings import Settings

T = TypeVar("T")

MARK = "***"
UNPARSEABLE = f"{MARK} (unparseable)"


def _libpq_password_keywords() -> frozenset[str]:
    """The keywords the linked libpq marks as password fields (dispchar ``*``)."""
    try:
        options = pq.Conninfo.get_defaults()
    except (psycopg.Error, OSError):  # pragma: no cover - libpq without PQconndefaults
        return frozenset()
    return frozenset(o.keyword.decode() for o in options if o.dispchar == b"*")


# libpq parameters whose value is a secret. libpq marks password, sslpassword and (PostgreSQL
# 18) oauth_client_secret as password fields; scram_client_key and scram_server_key (17) are
# SCRAM keys derived from a password, as good as one. Whatever else the linked libpq marks as
# a password field is added too.
SECRET_PARAMETERS: frozenset[str] = (
    frozenset(
        {"password", "sslpassword", "oauth_client_secret", "scram_client_key", "scram_server_key"}
    )
    | _libpq_password_keywords()
)

# Names of secrets in free text: the libpq parameters, and libpq's PGPASSWORD variable.
_TEXT_KEYS = sorted(SECRET_PARAMETERS | {"pgpassword"}, key=len, reverse=True)

# A libpq URL in free text: it ends at whitespace, a quote or an angle bracket.
_URL = r"(?<![\w+.-])(?i:postgres(?:ql)?://)[^\s'\"`<>]*"
# A key=value conninfo fragment with a secret key; the value as libpq reads it (quoted with
# backslash escapes, or up to the next whitespace), an unterminated quote to the end of text.
_KEY_VALUE = (
    r"(?<![A-Za-z0-9])(?i:" + "|".join(re.escape(k) for k in _TEXT_KEYS) + r")[ \t]*=[ \t]*"
    r"(?:'(?:[^'\\]|\\[\s\S])*'?|(?:[^\s\\]|\\[\s\S]?)+)?"
)
# Where a known secret may stand as a token: after the start, whitespace, a quote or an opening
# bracket; before the end, whitespace or a quote, optionally through trailing punctuation.
_STANDS_AFTER = r"(?<![^\s'\"`(\[{<])"
_STANDS_BEFORE = r"(?=[.,;:!?)\]}>]*(?:[\s'\"`]|\Z))"
_CLOSING = re.compile(r"[\"'`.,;:!?)\]}>]*")
_PARSE = re.compile(rf"(?P<url>{_URL})|(?P<kv>{_KEY_VALUE})")
_KV_PARTS = re.compile(r"(?P<key>[^\s=]+)(?P<eq>[ \t]*=[ \t]*)(?P<value>[\s\S]*)")


def _unquote_conninfo_value(value: str) -> str:
    """A key=value value as libpq reads it: quotes removed, backslash escapes resolved."""
    if value.startswith("'"):
        value = value[1:-1] if len(value) > 1 and value.endswith("'") else value[1:]
    return re.sub(r"\\([\s\S])", r"\1", value)


def _split_url(url: str) -> tuple[str, str | None, str, str | None]:
    """``(scheme_and_user, password, hosts_and_path, query)`` of a libpq URL.

    Like libpq, the user information ends at the first ``@`` before any ``/``, and the query
    starts at the first ``?`` after it.
    """
    scheme, _, rest = url.partition("://")
    head = f"{scheme}://"
    password: str | None = None
    stop = re.search(r"[@/]", rest)
    if stop is not None and stop.group() == "@":
        user, colon, secret = rest[: stop.start()].partition(":")
        head += user + colon
        password = secret if colon else None
        rest = rest[stop.start() :]
    body, question, query = rest.partition("?")
    return head, password, body, query if question else None


def _secret_query_pairs(query: str) -> Iterable[tuple[int, str]]:
    """Index and raw value of every secret parameter in a URL's query string."""
    for index, pair in enumerate(query.split("&")):
        key, equals, value = pair.partition("=")
        if equals and unquote(key).lower() in SECRET_PARAMETERS:
            yield index, value


def secret_values(conninfo: str) -> set[str]:
    """The secret values a DSN holds, as libpq reads them (and as written, if they differ).

    libpq parses it first; a lenient parse of the same grammar then catches what a DSN that
    libpq rejects (or a newer parameter) may still hold.
    """
    found: set[str] = set()
    try:
        params = conninfo_to_dict(conninfo)
    except psycopg.ProgrammingError:
        found.add(conninfo.strip())  # unparseable: nothing to do with it is safe to show
    else:
        found.update(str(v) for k, v in params.items() if k in SECRET_PARAMETERS and v)
    for match in _PARSE.finditer(conninfo):
        if match.group("url"):
            _, password, _, query = _split_url(match.group())
            raw = [password] if password else []
            raw += [v for _, v in _secret_query_pairs(query or "") if v]
            found.update(raw)
            found.update(unquote(v) for v in raw)
        else:
            parts = _KV_PARTS.match(match.group())
            if parts is not None and parts.group("value"):
                found.add(_unquote_conninfo_value(parts.group("value")))
    return {s for s in found if s.strip() and s != MARK}


class Redactor:
    """Knows the secrets of one configuration; redacts DSNs and free text by parsing."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        known = {s for s in secrets if s and s.strip() and s != MARK}
        self._known = tuple(sorted(known, key=lambda s: (-len(s), s)))
        known |= {quote(s, safe="") for s in known}  # as a URL would carry it
        self._secrets: tuple[str, ...] = tuple(sorted(known, key=lambda s: (-len(s), s)))
        pattern = _PARSE.pattern
        if self._secrets:
            tokens = "|".join(re.escape(s) for s in self._secrets)
            pattern += rf"|(?P<token>{_STANDS_AFTER}(?:{tokens}){_STANDS_BEFORE})"
        self._pattern = re.compile(pattern)  # secrets match case-sensitively

    @classmethod
    def from_settings(cls, settings: Settings) -> Redactor:
        """The secrets of the source's, the audit copy's and the lake's DSNs."""
        found: set[str] = set()
        for url in (settings.database_url, settings.audit.database_url, settings.lake.database_url):
            if url is not None:
                found |= secret_values(url.get_secret_value())
        return cls(found)

    @property
    def secrets(self) -> tuple[str, ...]:
        """Every known secret, longest first (matched also as a URL would encode it)."""
        return self._known

    def __repr__(self) -> str:  # never the secrets themselves
        return f"Redactor(<{len(self._known)} secrets>)"

    # ---------------------------------------------------------------------------------- DSNs

    def dsn(self, conninfo: str) -> str:
        """A whole DSN with every secret parameter as ***; unparseable: no DSN at all.

        The DSN keeps its form (a URL stays a URL, key=value keeps its order) when libpq reads
        the redacted text back with the same parameters and every secret one as ***; else it is
        rebuilt by libpq's rules from the parsed parameters.
        """
        try:
            params = conninfo_to_dict(conninfo)
        except psycopg.ProgrammingError:
            return UNPARSEABLE
        redacted = self._parsed(conninfo.strip(), closing=False)
        try:
            again = conninfo_to_dict(redacted)
        except psycopg.ProgrammingError:
            again = {}
        hidden = all(again.get(key) == MARK for key in SECRET_PARAMETERS if params.get(key))
        if hidden and again.keys() == params.keys():
            return redacted
        for key in SECRET_PARAMETERS:
            if params.get(key):
                params[key] = MARK
        rebuilt = make_conninfo(**{k: str(v) for k, v in params.items() if v is not None})
        return self._parsed(rebuilt, closing=False)

    def _mark(self, value: str, *, closing: bool) -> str:
        """*** for a secret value; in free text, punctuation that closes it is kept."""
        if not value:
            return value
        if closing:
            for secret in self._secrets:
                if value.startswith(secret) and _CLOSING.fullmatch(value[len(secret) :]):
                    return MARK + value[len(secret) :]
        return MARK

    def _url(self, url: str, *, closing: bool) -> str:
        head, password, body, query = _split_url(url)
        if password:
            head += MARK
        if query is None:
            return head + body
        pairs = query.split("&")
        for index, value in _secret_query_pairs(query):
            key = pairs[index].partition("=")[0]
            last = index == len(pairs) - 1
            pairs[index] = f"{key}={self._mark(value, closing=closing and last)}"
        return f"{head}{body}?{'&'.join(pairs)}"

    def _key_value(self, fragment: str, *, closing: bool) -> str:
        parts = _KV_PARTS.match(fragment)
        if parts is None:  # pragma: no cover - the fragment matched _KEY_VALUE
            return MARK
        value = parts.group("value")
        if not value or value in ("''", "'"):
            return fragment
        kept = "" if value.startswith("'") else value
        marked = self._mark(kept, closing=closing) if kept else MARK
        return f"{parts.group('key')}{parts.group('eq')}{marked}"

    # ---------------------------------------------------------------------------------- text

    def _replace(self, match: re.Match[str], *, closing: bool) -> str:
        if match.group("url"):
            return self._url(match.group(), closing=closing)
        if match.group("kv"):
            return self._key_value(match.group(), closing=closing)
        return MARK  # a known secret standing as a token

    def _parsed(self, text: str, *, closing: bool) -> str:
        """``text`` with the secrets of its URLs and key=value fragments as ***."""
        return _PARSE.sub(lambda m: self._replace(m, closing=closing), text)

    def text(self, text: str) -> str:
        """Free text with the secrets of every embedded DSN and every known secret as ***.

        URLs (``postgres://``, ``postgresql://``) and ``key=value`` fragments with a secret key
        are parsed; a known secret is replaced only where it stands as a whole token.
        """
        return self._pattern.sub(lambda m: self._replace(m, closing=True), text)

    def value(self, value: T) -> T:
        """``value`` with text() applied to every string in it, through dicts, lists, tuples.

        A dict entry whose key names a secret parameter (``password``) is *** whole.
        """
        result: Any
        if isinstance(value, str):
            result = self.text(value)
        elif isinstance(value, dict):
            result = {
                k: (
                    MARK
                    if isinstance(k, str) and k.lower() in SECRET_PARAMETERS and v
                    else self.value(v)
                )
                for k, v in value.items()
            }
        elif isinstance(value, list):
            result = [self.value(v) for v in value]
        elif isinstance(value, tuple):
            result = tuple(self.value(v) for v in value)
        else:
            result = value
        return cast(T, result)


def redacted_settings(settings: Settings) -> dict[str, Any]:
    """The effective configuration as JSON-ready data, every secret as ***.

    Both DSNs (``database_url``, ``audit.database_url``) go through :meth:`Redactor.dsn`, then
    every string through :meth:`Redactor.value`: what ``config show`` prints and what the audit
    trail's ``config_hash`` hashes.
    """
    redactor = Redactor.from_settings(settings)
    data: dict[str, Any] = json.loads(settings.model_dump_json())
    source, audit = settings.database_url, settings.audit.database_url
    data["database_url"] = redactor.dsn(source.get_secret_value()) if source else None
    data["audit"]["database_url"] = redactor.dsn(audit.get_secret_value()) if audit else None
    return redactor.value(data)

"""What the source is: as the configuration describes it before connecting, and as a connection
reports it once connected.

libpq takes a connection from several places, in this order per parameter: the conninfo itself
(``ABACO_DATABASE_URL`` / ``database_url``), then a service of the service file (``service=`` or
``PGSERVICE``; ``PGSERVICEFILE`` or ``~/.pg_service.conf``, then ``$PGSYSCONFDIR/pg_service.conf``),
then the ``PG*`` variables, then its built-in defaults (the local socket, the login user); a
password missing from all of them may come from ``~/.pgpass``. ``describe`` says which of these
supplies the connection (for `config show` and error messages); ``SourceIdentity.of`` records what
the connection really reached (manifests, audit records, `db check`). Never a password.
"""

from __future__ import annotations

import os
import pwd
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict

from abaco_cli.errors import ConfigurationError
from abaco_cli.settings import Settings

URL_VARIABLE = "ABACO_DATABASE_URL"
# The libpq variables that say where and as whom to connect (PGSERVICEFILE only names a file).
CONNECTION_VARIABLES = (
    "PGHOST",
    "PGHOSTADDR",
    "PGPORT",
    "PGDATABASE",
    "PGUSER",
    "PGPASSWORD",
    "PGPASSFILE",
    "PGSERVICE",
)
_KEYS = (  # conninfo key, its variable
    ("host", "PGHOST"),
    ("hostaddr", "PGHOSTADDR"),
    ("port", "PGPORT"),
    ("dbname", "PGDATABASE"),
    ("user", "PGUSER"),
    ("password", "PGPASSWORD"),
    ("passfile", "PGPASSFILE"),
)


@dataclass(frozen=True)
class SourceIdentity:
    """Where the source lives, safe to print: no password."""

    host: str
    port: str
    database: str
    user: str

    def __str__(self) -> str:
        return f"{self.user}@{self.host}:{self.port}/{self.database}"

    def to_json(self) -> dict[str, str]:
        return {"host": self.host, "port": self.port, "database": self.database, "user": self.user}

    @classmethod
    def of(cls, conn: psycopg.Connection[Any]) -> SourceIdentity:
        """What the open connection reports: the host (or socket folder) it reached, its port,
        database and user, whichever of URL, service file, PG* variables or defaults gave them."""
        info = conn.info
        return cls(host=info.host, port=str(info.port), database=info.dbname, user=info.user)


@dataclass(frozen=True)
class ConnectionSource:
    """Which mechanism supplies the connection, and what it resolves to before connecting."""

    mechanism: str  # url | service | environment | defaults
    description: str  # e.g. "libpq service abaco (PGSERVICE) in /etc/abaco/pg_service.conf"
    identity: SourceIdentity  # the configuration's guess; a connection reports the truth
    password_from: str | None  # e.g. "ABACO_DATABASE_URL", "PGPASSWORD", ".pgpass (/root/.pgpass)"

    def __str__(self) -> str:
        password = self.password_from or "none configured"
        where = "" if self.mechanism == "defaults" else f": {self.identity}"
        return f"{self.description}{where}; password: {password}"

    def to_json(self) -> dict[str, Any]:
        return {
            "mechanism": self.mechanism,
            "description": self.description,
            "source": self.identity.to_json(),
            "password_from": self.password_from,
        }


def conninfo_of(settings: Settings) -> str:
    """The configured conninfo ('' when unset: libpq then uses its variables and defaults)."""
    raw = settings.database_url.get_secret_value() if settings.database_url else ""
    try:
        conninfo_to_dict(raw)  # validates syntax without connecting
    except psycopg.ProgrammingError:
        raise ConfigurationError(
            "ABACO_DATABASE_URL is not a valid libpq connection string or URL"
        ) from None
    return raw


def nothing_configured(settings: Settings) -> bool:
    """Neither ABACO_DATABASE_URL (database_url) nor any PG* variable nor a service: libpq
    falls back to its defaults (the local socket, the login user)."""
    return settings.database_url is None and not any(
        os.environ.get(name) for name in CONNECTION_VARIABLES
    )


def describe(settings: Settings) -> ConnectionSource:
    """Which mechanism supplies the connection and what it resolves to, without connecting."""
    try:
        explicit = {k: str(v) for k, v in conninfo_to_dict(conninfo_of(settings)).items()}
    except ConfigurationError:
        explicit = {}
    url_name = _url_origin(settings)
    service = explicit.get("service") or os.environ.get("PGSERVICE") or ""
    service_params, service_file = _service(service) if service else ({}, None)
    resolved: dict[str, str] = {}
    origin: dict[str, str] = {}
    for key, variable in _KEYS:
        if explicit.get(key):
            resolved[key], origin[key] = explicit[key], url_name
        elif service_params.get(key):
            resolved[key], origin[key] = service_params[key], f"service {service}"
        elif os.environ.get(variable):
            resolved[key], origin[key] = os.environ[variable], variable
    user = resolved.get("user") or _login_user()
    identity = SourceIdentity(
        host=resolved.get("host") or resolved.get("hostaddr") or "localhost",
        port=resolved.get("port") or "5432",
        database=resolved.get("dbname") or user,
        user=user,
    )
    variables = sorted({v for v in origin.values() if v.startswith("PG")})
    if settings.database_url is not None:
        mechanism, text = "url", url_name
        if service:
            text += f", naming libpq service {service} {_where(service, service_file)}"
    elif service:
        mechanism = "service"
        text = f"libpq service {service} (PGSERVICE) {_where(service, service_file)}"
    elif variables:
        mechanism, text = "environment", "PG* variables"
    else:
        mechanism = "defaults"
        text = (
            f"nothing configured (no {URL_VARIABLE}, database_url, PG* variable or service): "
            f"libpq's defaults, the local socket as user {identity.user}, "
            f"database {identity.database}"
        )
    if variables and mechanism != "environment":
        text += f", with {', '.join(variables)}"
    elif variables:
        text += f" {', '.join(variables)}"
    return ConnectionSource(mechanism, text, identity, _password_from(resolved, origin, identity))


def source_identity(settings: Settings) -> SourceIdentity:
    """Host, port, database and user as the configuration resolves them before connecting
    (URL, service file, environment, defaults); once connected, ``SourceIdentity.of``."""
    return describe(settings).identity


def _url_origin(settings: Settings) -> str:
    if settings.database_url is None:
        return URL_VARIABLE
    given = os.environ.get(URL_VARIABLE)
    if given is not None and given == settings.database_url.get_secret_value():
        return URL_VARIABLE
    return "database_url (abaco.toml or the command line)"


def _login_user() -> str:
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return os.environ.get("USER", "")


def _home() -> Path:
    return Path(os.environ.get("HOME") or pwd.getpwuid(os.geteuid()).pw_dir)


def _service_files() -> list[Path]:
    """Where libpq looks for a service, in order."""
    user_file = os.environ.get("PGSERVICEFILE")
    found = [Path(user_file) if user_file else _home() / ".pg_service.conf"]
    if sysconf := os.environ.get("PGSYSCONFDIR"):
        found.append(Path(sysconf) / "pg_service.conf")
    return found


def _service(name: str) -> tuple[dict[str, str], Path | None]:
    """The parameters of service ``name`` and the file that defines it (libpq's format:
    ``[name]`` sections of ``key=value`` lines, ``#`` comments); ({}, None) when none does."""
    for path in _service_files():
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError):
            continue
        section: str | None = None
        params: dict[str, str] = {}
        found = False
        for raw in lines:
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            if line.startswith("[") and line.endswith("]"):
                section = line[1:-1].strip()
                found = found or section == name
                continue
            if section == name and "=" in line:
                key, _, value = line.partition("=")
                params[key.strip()] = value.strip()
        if found:
            return params, path
    return {}, None


def _where(name: str, path: Path | None) -> str:
    if path is not None:
        return f"in {path}"
    searched = ", ".join(str(p) for p in _service_files())
    return f"(not defined in {searched}: libpq will refuse it)"


def _password_from(
    resolved: dict[str, str], origin: dict[str, str], identity: SourceIdentity
) -> str | None:
    """Where the password comes from: the conninfo, the service, PGPASSWORD or a matching line
    of the password file; None when none supplies one (trust, peer or certificate auth)."""
    if resolved.get("password"):
        return origin["password"]
    passfile = Path(resolved.get("passfile") or _home() / ".pgpass")
    try:
        lines = passfile.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return None
    host = identity.host if identity.host and not identity.host.startswith("/") else "localhost"
    wanted = (host, identity.port, identity.database, identity.user)
    for line in lines:
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        fields = _pgpass_fields(line)
        if len(fields) >= 5 and all(f in ("*", w) for f, w in zip(fields[:4], wanted, strict=True)):
            return f".pgpass ({passfile})"
    return None


def _pgpass_fields(line: str) -> list[str]:
    """``host:port:db:user:password`` with ``\\:`` and ``\\\\`` escaped."""
    fields: list[str] = []
    current: list[str] = []
    escaped = False
    for char in line:
        if escaped:
            current.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == ":" and len(fields) < 4:
            fields.append("".join(current))
            current = []
        else:
            current.append(char)
    fields.append("".join(current))
    return fields

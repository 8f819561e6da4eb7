"""The PostgreSQL ledger engine (psycopg 3), for teams sharing one ledger.

The URL never carries a password (libpq reads PGPASSWORD or ~/.pgpass); errors leave as one-line LedgerErrors.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from capguard.core.errors import LedgerError
from capguard.ledger.backend import IntegrityViolation, Params, one_line

_MIGRATION_LOCK = int.from_bytes(b"capguard", "big")  # pg_advisory_xact_lock key, one per database
_PASSWORD_HOME = "the password belongs in PGPASSWORD or ~/.pgpass"
_PASSWORD_KEYS = ("password", "sslpassword")  # libpq parameters that are secrets


def safe_url(url: str) -> str:
    """The URL with any password removed, for messages and `capguard ledger path`."""
    try:
        parts = urlsplit(url)
        netloc = parts.netloc
        if "@" in netloc:
            userinfo, hosts = netloc.rsplit("@", 1)
            netloc = f"{userinfo.split(':', 1)[0]}@{hosts}"
        query = urlencode([(k, v) for k, v in parse_qsl(parts.query) if k not in _PASSWORD_KEYS])
        return urlunsplit((parts.scheme, netloc, parts.path, query, ""))
    except ValueError:
        return url.split("://", 1)[0] + "://…"


def check_url(url: str) -> None:
    """Refuse a URL that carries a password: URLs end up in configs, shell history and process lists."""
    try:
        parts = urlsplit(url)
        has_password = ":" in parts.netloc.rpartition("@")[0] or any(
            key in _PASSWORD_KEYS for key, _ in parse_qsl(parts.query)
        )
    except ValueError as exc:
        raise LedgerError(f"ledger URL {safe_url(url)} is not a valid PostgreSQL URL ({exc})") from exc
    if has_password:
        raise LedgerError(f"ledger URL {safe_url(url)} contains a password; remove it, {_PASSWORD_HOME}")


class _Executor:
    dialect = "postgresql"

    def __init__(self, conn: Any) -> None:
        self._conn = conn

    def _run(self, sql: str, params: Params) -> Any:
        # Shared SQL uses `?`; psycopg wants `%s` (and `%%` for a literal percent). Params are always passed,
        # even empty, so psycopg always applies that escaping.
        return self._conn.execute(sql.replace("%", "%%").replace("?", "%s"), tuple(params))

    def execute(self, sql: str, params: Params = ()) -> int:
        return self._run(sql, params).rowcount

    def query(self, sql: str, params: Params = ()) -> list[dict[str, Any]]:
        return list(self._run(sql, params).fetchall())

    def executemany(self, sql: str, rows: list[tuple[Any, ...]]) -> int:
        with self._conn.cursor() as cursor:  # psycopg pipelines executemany: one round trip per batch
            cursor.executemany(sql.replace("%", "%%").replace("?", "%s"), rows)
            return cursor.rowcount


class PostgresBackend:
    dialect = "postgresql"

    def __init__(self, url: str, *, connect_timeout_s: int = 10) -> None:
        check_url(url)
        self.path_or_url = url  # safe to show: check_url refused any password
        self._url = url
        self._timeout = connect_timeout_s
        self._pg = self._import_psycopg()
        self._conn: Any = None  # a psycopg.Connection; psycopg is optional and imported here, so untyped
        self._connect()

    def _import_psycopg(self) -> Any:
        try:
            import psycopg
            from psycopg import rows
        except ImportError as exc:
            raise LedgerError(
                f"ledger {self.path_or_url} is PostgreSQL, which needs psycopg 3;"
                " install it with: pip install 'capguard-cli[postgres]'"
            ) from exc
        self._dict_row = rows.dict_row
        return psycopg

    def _connect(self) -> None:
        pg = self._pg
        try:
            options = pg.conninfo.conninfo_to_dict(self._url)
            extra = {} if "connect_timeout" in options else {"connect_timeout": self._timeout}
            self._conn = pg.connect(self._url, autocommit=True, row_factory=self._dict_row, **extra)
        except pg.Error as exc:
            fix = "check that the server is up and the URL is right"
            if "password" in str(exc):
                fix = "put this user's password in PGPASSWORD or ~/.pgpass"
            raise LedgerError(
                f"cannot connect to the PostgreSQL ledger {self.path_or_url} ({one_line(exc)}); {fix}"
            ) from exc

    @contextmanager
    def _translated(self) -> Iterator[None]:
        pg = self._pg
        if self._conn is None or self._conn.closed or self._conn.broken:
            self._connect()  # the server restarted since the last write: try once more with a new connection
        try:
            yield
        except pg.errors.IntegrityError as exc:
            raise IntegrityViolation(f"ledger {self.path_or_url}: {one_line(exc)}") from exc
        except (pg.errors.InsufficientPrivilege, pg.errors.ReadOnlySqlTransaction) as exc:
            raise LedgerError(
                f"PostgreSQL ledger {self.path_or_url} cannot be written ({one_line(exc)});"
                " grant this user INSERT, UPDATE and CREATE on its database, or connect to the primary server"
            ) from exc
        except pg.OperationalError as exc:
            raise LedgerError(
                f"lost the PostgreSQL ledger {self.path_or_url} ({one_line(exc)}); check that the server is up"
            ) from exc
        except pg.Error as exc:
            raise LedgerError(f"PostgreSQL ledger {self.path_or_url} failed ({one_line(exc)})") from exc

    @contextmanager
    def write(self, *, lock: bool = False) -> Iterator[_Executor]:
        with self._translated(), self._conn.transaction():
            executor = _Executor(self._conn)
            if lock:
                executor.execute("SELECT pg_advisory_xact_lock(?)", (_MIGRATION_LOCK,))
            yield executor

    def migrating(self) -> Any:
        # PostgreSQL runs transactions side by side, so concurrent first opens must queue on a lock; otherwise
        # two processes would both create the tables (DDL is transactional, so a failed one leaves nothing).
        return self.write(lock=True)

    def query(self, sql: str, params: Params = ()) -> list[dict[str, Any]]:
        with self._translated():
            return _Executor(self._conn).query(sql, params)

    def has_table(self, name: str) -> bool:
        sql = (
            "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema() AND table_name = ?"
        )
        return bool(self.query(sql, (name,)))

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()

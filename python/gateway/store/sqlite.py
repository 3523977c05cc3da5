"""The embedded store: gateway keys (hashed) and per-request records, in one SQLite file.

WAL mode lets every Granian worker process write to the same file; each connection is used by one thread only
(the request path reads keys through a short-lived cache; the record writer thread owns its own connection).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import sqlite3
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import msgspec
import orjson

from gateway.context import Record
from gateway.types import Principal

KEY_PREFIX = "gw-"

SCHEMA = """
CREATE TABLE IF NOT EXISTS keys (
    key_id      TEXT PRIMARY KEY,
    key_hash    TEXT NOT NULL UNIQUE,
    display     TEXT NOT NULL,
    tenant      TEXT NOT NULL,
    team        TEXT,
    name        TEXT,
    models      TEXT NOT NULL DEFAULT '[]',
    residency   TEXT NOT NULL DEFAULT '[]',
    profile     TEXT,
    created_at  REAL NOT NULL,
    revoked_at  REAL
);
CREATE TABLE IF NOT EXISTS records (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    request_id  TEXT NOT NULL,
    ts          REAL NOT NULL,
    tenant      TEXT,
    key_id      TEXT,
    status      INTEGER NOT NULL,
    model_served TEXT,
    cost_usd    REAL NOT NULL DEFAULT 0,
    body        BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS records_tenant_ts ON records (tenant, ts);
CREATE INDEX IF NOT EXISTS records_request_id ON records (request_id);
CREATE TABLE IF NOT EXISTS policies (
    kind        TEXT NOT NULL,
    scope       TEXT NOT NULL,
    ident       TEXT NOT NULL,
    rule        TEXT NOT NULL,
    updated_at  REAL NOT NULL,
    PRIMARY KEY (kind, scope, ident)
);
CREATE TABLE IF NOT EXISTS worker_metrics (
    worker      TEXT PRIMARY KEY,
    body        TEXT NOT NULL,
    updated_at  REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS quarantine (
    review_id   TEXT PRIMARY KEY,
    ts          REAL NOT NULL,
    request_id  TEXT NOT NULL,
    key_id      TEXT,
    tenant      TEXT,
    decision    TEXT NOT NULL,
    body        TEXT NOT NULL,
    status      TEXT NOT NULL DEFAULT 'held'
);
CREATE TABLE IF NOT EXISTS approvals (
    token_hash  TEXT PRIMARY KEY,
    key_id      TEXT NOT NULL,
    max_usd     REAL NOT NULL,
    expires_at  REAL NOT NULL,
    used_at     REAL
);
"""


def hash_key(key: str) -> str:
    """A key's plain SHA-256: the stored hash without ``server.key_secret`` (and before one was set)."""
    return hashlib.sha256(key.encode()).hexdigest()


class KeyHasher:
    """Gateway key → the hash it is stored and looked up by.

    With ``server.key_secret`` set: HMAC-SHA-256 under that secret (``h1:`` + hex), so a copy of the database
    without the secret is not a lookup table for keys (config keys may be human-chosen; store keys are 256-bit
    random). Without it: plain SHA-256, as before. Hashes stored before the secret was set still authenticate
    (``legacy``) and are re-stored under the secret on first use."""

    def __init__(self, secret: str | None = None) -> None:
        self._mac = hmac.new(secret.encode(), digestmod=hashlib.sha256) if secret else None

    def __call__(self, key: str) -> str:
        if self._mac is None:
            return hash_key(key)
        m = self._mac.copy()
        m.update(key.encode())
        return "h1:" + m.hexdigest()

    def legacy(self, key: str) -> str | None:
        """The hash the key had before the secret was set, if there is a secret."""
        return hash_key(key) if self._mac is not None else None


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def connect(path: str | Path) -> sqlite3.Connection:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(p, timeout=30.0, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA busy_timeout=30000")
    # Switching to WAL takes an exclusive lock that does not wait on the busy handler: workers starting at
    # the same moment retry briefly (``gateway serve`` also prepares the file before it starts them).
    for attempt in range(50):
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.executescript(SCHEMA)
            break
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) or attempt == 49:
                raise
            time.sleep(0.05)
    conn.execute("PRAGMA synchronous=NORMAL")
    return conn


def _principal(row: Sequence[Any]) -> Principal:
    key_id, tenant, team, name, models, residency, profile = row
    return Principal(
        key_id=key_id,
        tenant=tenant,
        team=team,
        name=name,
        models=tuple(orjson.loads(models)),
        residency=tuple(orjson.loads(residency)),
        profile=profile,
    )


def record_row(r: Record) -> tuple[Any, ...]:
    return (
        r.request_id,
        r.ts,
        r.tenant,
        r.key_id,
        r.status,
        r.model_served,
        r.cost_usd,
        msgspec.json.encode(r),
    )


class SqliteStore:
    def __init__(self, path: str | Path, key_secret: str | None = None) -> None:
        self.path = str(path)
        self.conn = connect(path)
        self.hasher = KeyHasher(key_secret)

    # ------------------------------------------------------------ keys

    def create_key(
        self,
        tenant: str,
        team: str | None = None,
        name: str | None = None,
        models: Iterable[str] = (),
        residency: Iterable[str] = (),
        profile: str | None = None,
    ) -> tuple[str, str]:
        """Returns (key_id, the plain key). The plain key is shown once and never stored."""
        key = new_key()
        key_id = "key_" + secrets.token_hex(8)
        self.conn.execute(
            "INSERT INTO keys (key_id, key_hash, display, tenant, team, name, models, residency, profile, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                key_id,
                self.hasher(key),
                key[:7] + "…" + key[-4:],
                tenant,
                team,
                name,
                orjson.dumps(list(models)).decode(),
                orjson.dumps(list(residency)).decode(),
                profile,
                time.time(),
            ),
        )
        return key_id, key

    def find_key(self, key_hash: str) -> Principal | None:
        row = self.conn.execute(
            "SELECT key_id, tenant, team, name, models, residency, profile FROM keys"
            " WHERE key_hash = ? AND revoked_at IS NULL",
            (key_hash,),
        ).fetchone()
        return _principal(row) if row else None

    def rehash(self, old_hash: str, new_hash: str) -> None:
        """A key authenticated by its legacy hash is stored under the keyed one from now on."""
        self.conn.execute("UPDATE keys SET key_hash = ? WHERE key_hash = ?", (new_hash, old_hash))

    def list_keys(self, tenant: str | None = None) -> list[dict[str, Any]]:
        sql = "SELECT key_id, display, tenant, team, name, models, created_at, revoked_at FROM keys"
        args: tuple[Any, ...] = ()
        if tenant:
            sql += " WHERE tenant = ?"
            args = (tenant,)
        cols = ("key_id", "display", "tenant", "team", "name", "models", "created_at", "revoked_at")
        out = []
        for row in self.conn.execute(sql + " ORDER BY created_at", args):
            d = dict(zip(cols, row, strict=True))
            d["models"] = orjson.loads(d["models"])
            out.append(d)
        return out

    def active_key(self, key_id: str) -> bool:
        row = self.conn.execute(
            "SELECT 1 FROM keys WHERE key_id = ? AND revoked_at IS NULL", (key_id,)
        ).fetchone()
        return row is not None

    def revoke_key(self, key_id: str) -> bool:
        cur = self.conn.execute(
            "UPDATE keys SET revoked_at = ? WHERE key_id = ? AND revoked_at IS NULL", (time.time(), key_id)
        )
        return cur.rowcount == 1

    # ------------------------------------------------------------ budgets and limits set at run time (admin API)

    def put_policy(self, kind: str, scope: str, ident: str, rule: dict[str, Any] | None) -> None:
        """``kind``: budget | limit. ``rule`` None removes it (the config value applies again)."""
        if rule is None:
            self.conn.execute(
                "DELETE FROM policies WHERE kind = ? AND scope = ? AND ident = ?", (kind, scope, ident)
            )
            return
        self.conn.execute(
            "INSERT OR REPLACE INTO policies (kind, scope, ident, rule, updated_at) VALUES (?, ?, ?, ?, ?)",
            (kind, scope, ident, orjson.dumps(rule).decode(), time.time()),
        )

    def policies(self) -> dict[tuple[str, str, str], dict[str, Any]]:
        rows = self.conn.execute("SELECT kind, scope, ident, rule FROM policies")
        return {(k, s, i): orjson.loads(r) for k, s, i, r in rows}

    # ------------------------------------------------------------ requests held for review (compliance quarantine)

    def put_quarantine(
        self,
        review_id: str,
        request_id: str,
        key_id: str | None,
        tenant: str | None,
        decision: dict,
        body: dict,
    ) -> None:
        self.conn.execute(
            "INSERT INTO quarantine (review_id, ts, request_id, key_id, tenant, decision, body) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                review_id,
                time.time(),
                request_id,
                key_id,
                tenant,
                orjson.dumps(decision).decode(),
                orjson.dumps(body).decode(),
            ),
        )

    def quarantined(self, tenant: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        sql = "SELECT review_id, ts, request_id, key_id, tenant, decision, body, status FROM quarantine"
        args: tuple[Any, ...] = ()
        if tenant is not None:
            sql += " WHERE tenant = ?"
            args = (tenant,)
        rows = self.conn.execute(sql + " ORDER BY ts DESC LIMIT ?", (*args, limit))
        cols = ("review_id", "ts", "request_id", "key_id", "tenant", "decision", "body", "status")
        out = []
        for row in rows:
            d = dict(zip(cols, row, strict=True))
            d["decision"], d["body"] = orjson.loads(d["decision"]), orjson.loads(d["body"])
            out.append(d)
        return out

    # ------------------------------------------------------------ approval tokens: single use, bound to a key

    def put_approval(self, token_hash: str, key_id: str, max_usd: float, ttl_s: float) -> None:
        now = time.time()
        self.conn.execute("DELETE FROM approvals WHERE expires_at < ?", (now - 86400,))
        self.conn.execute(
            "INSERT INTO approvals (token_hash, key_id, max_usd, expires_at) VALUES (?, ?, ?, ?)",
            (token_hash, key_id, max_usd, now + ttl_s),
        )

    def take_approval(self, token_hash: str, key_id: str, cost_usd: float) -> bool:
        """Atomically spends the token if it is unused, unexpired, for this key and covers ``cost_usd``."""
        now = time.time()
        cur = self.conn.execute(
            "UPDATE approvals SET used_at = ? WHERE token_hash = ? AND used_at IS NULL AND expires_at > ?"
            " AND key_id = ? AND max_usd >= ?",
            (now, token_hash, now, key_id, cost_usd),
        )
        return cur.rowcount == 1

    # ------------------------------------------------------------ per-worker metrics snapshots (admin stats)

    def put_metrics(self, worker: str, snapshot: dict[str, Any]) -> None:
        self.conn.execute(
            "INSERT OR REPLACE INTO worker_metrics (worker, body, updated_at) VALUES (?, ?, ?)",
            (worker, orjson.dumps(snapshot).decode(), time.time()),
        )

    def metrics(self, max_age_s: float) -> dict[str, dict[str, Any]]:
        rows = self.conn.execute(
            "SELECT worker, body FROM worker_metrics WHERE updated_at > ?", (time.time() - max_age_s,)
        )
        return {w: orjson.loads(b) for w, b in rows}

    # ------------------------------------------------------------ records

    def insert_records(self, records: Sequence[Record]) -> None:
        self.insert_rows([record_row(r) for r in records])

    def insert_rows(self, rows: Sequence[tuple[Any, ...]]) -> None:
        """Rows made by :func:`record_row` (the writer thread encodes them in small slices, see records.py)."""
        # One transaction per batch: in autocommit mode every row would be its own commit (~100 us each).
        with self.conn:
            self.conn.execute("BEGIN")
            self.conn.executemany(
                "INSERT INTO records (request_id, ts, tenant, key_id, status, model_served, cost_usd, body)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )

    def records(self, tenant: str | None = None, limit: int = 1000) -> list[dict[str, Any]]:
        sql = "SELECT body FROM records"
        args: tuple[Any, ...] = ()
        if tenant is not None:
            sql += " WHERE tenant = ?"
            args = (tenant,)
        sql += " ORDER BY ts DESC LIMIT ?"
        return [orjson.loads(row[0]) for row in self.conn.execute(sql, (*args, limit))]

    def count_records(self) -> int:
        return self.conn.execute("SELECT COUNT(*) FROM records").fetchone()[0]

    def close(self) -> None:
        self.conn.close()

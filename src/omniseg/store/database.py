"""The connection to the one SQLite store that is the source of truth: opened (read-only for looking), its schema
created or migrated, transactions. What is read and written lives in the module of each group of tables
(:mod:`.runs`, :mod:`.workers`, :mod:`.results`, :mod:`.masks`, :mod:`.bookings`, :mod:`.subsets`,
:mod:`.reviews`, :mod:`.jobs`), as functions of an open :class:`Store`.

A (task, sample, model) pair has at most one prediction row (primary key), and its prediction and score rows are
written in one transaction (:func:`omniseg.store.results.record`), so a run killed at any instant leaves each pair
either complete or absent. docs/outputs.md documents every table and column.
"""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

from .schema import FILL_COLUMNS, META_COLUMNS, SCHEMA, SCHEMA_VERSION, SIGNATURE_COLUMNS, Transaction
from .sqlite import check_database, readonly_uri, unusable
from ..errors import OmnisegError

DEFAULT_PATH = Path("runs") / "omniseg.sqlite"


class Store:
    """One SQLite database plus the mask files beside it."""

    def __init__(self, path: str | Path = DEFAULT_PATH, readonly: bool = False):
        # pragma: no mutate block (outside the mutation scope: docs/testing.md)
        self.path = Path(path)
        self.readonly = readonly
        if readonly and not self.path.is_file():
            raise OmnisegError(f"{self.path}: no store there; run `omniseg run --task <task>` first, or pass --store")
        try:
            if readonly:  # for looking only (--dry-run, report): nothing is created or changed
                self.db = sqlite3.connect(readonly_uri(self.path), uri=True, timeout=30,
                                          isolation_level=None, check_same_thread=False)
            else:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                # The runner writes from one background thread while the main thread predicts; the two
                # never use the connection at the same time (the main thread waits for the writer).
                self.db = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
            self.db.row_factory = sqlite3.Row
            check_database(self.db, self.path, "store")
            if not readonly:
                self.db.execute("PRAGMA journal_mode=WAL")
                # NORMAL in WAL mode survives a killed process; FULL would also survive power loss.
                self.db.execute("PRAGMA synchronous=NORMAL")
            version = self.db.execute("PRAGMA user_version").fetchone()[0]
            if version not in (0, 1, 2, 3, 4, 5, SCHEMA_VERSION):
                raise OmnisegError(f"{self.path}: store schema {version} is newer than this omniseg's "
                                   f"({SCHEMA_VERSION}); upgrade omniseg or use a new --store")
            if not readonly and version != SCHEMA_VERSION:
                with self.transaction():  # one process creates or migrates; another waits, then finds it done
                    if self.db.execute("PRAGMA user_version").fetchone()[0] != SCHEMA_VERSION:
                        for statement in SCHEMA.split(";"):
                            if statement.strip():
                                self.db.execute(statement)
                        self._migrate()
                        self.db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        except BaseException as e:  # a store refused on open leaves no connection behind (its file stays unlocked)
            if getattr(self, "db", None) is not None:
                self.db.close()
            if isinstance(e, sqlite3.DatabaseError):
                raise unusable(self.path, "store", e) from None
            raise

    def columns(self, table: str) -> list[str]:
        # pragma: no mutate block (outside the mutation scope: docs/testing.md)
        return [r[1] for r in self.db.execute(f"PRAGMA table_info({table})")]

    def _migrate(self) -> None:
        # pragma: no mutate block (outside the mutation scope: docs/testing.md)
        """Bring a store written by an older omniseg up to this schema (columns are only ever added)."""
        for table, column, decl in (("models", "role", "TEXT"), ("runs", "host", "TEXT"), ("runs", "pid", "INTEGER"),
                                    ("runs", "pid_started", "TEXT"),
                                    ("api_calls", "cost_known", "INTEGER NOT NULL DEFAULT 1"),
                                    *(("predictions", c, d) for c, d in META_COLUMNS.items()),
                                    *(("models", c, d) for c, (d, _) in SIGNATURE_COLUMNS.items())):
            if column not in self.columns(table):
                self.db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {decl}")
        for statement in FILL_COLUMNS:  # what older rows hold in their JSON, as the columns the study reads
            self.db.execute(statement)

    @property
    def root(self) -> Path:
        # pragma: no mutate block (outside the mutation scope: docs/testing.md)
        return self.path.parent

    def close(self) -> None:
        # pragma: no mutate block (outside the mutation scope: docs/testing.md)
        self.db.close()

    def __enter__(self) -> "Store":
        # pragma: no mutate block (outside the mutation scope: docs/testing.md)
        return self

    def __exit__(self, *exc) -> None:
        # pragma: no mutate block (outside the mutation scope: docs/testing.md)
        self.close()

    def transaction(self):
        # pragma: no mutate block (outside the mutation scope: docs/testing.md)
        return Transaction(self.db)

    def query(self, sql: str, params: tuple = ()):
        # pragma: no mutate block (outside the mutation scope: docs/testing.md)
        import pandas as pd

        return pd.read_sql_query(sql, self.db, params=params)


def count_rows(path: Path, tables: tuple[str, ...]) -> int | None:
    """Rows in ``tables`` of the SQLite file at ``path`` together; None when it cannot be read as one (a command
    removes the store and archive it created but never wrote to)."""
    try:
        with contextlib.closing(sqlite3.connect(path)) as db:  # sqlite3's own `with` commits but never closes
            return sum(db.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in tables)
    except sqlite3.Error:
        return None

"""SQLAlchemy statements compiled once per dialect and run on the DBAPI cursor of an SQLAlchemy connection, inside
its transaction: the loop's journal writes many small batches, where SQLAlchemy's per-call machinery (building the
execution context, processing every parameter) costs several times what the database itself spends."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from operator import itemgetter
from typing import Any

from sqlalchemy.engine import Connection


class Compiled:
    """One statement, its SQL text and parameter order for each dialect it has met."""

    def __init__(self, stmt: Any | Callable[[str], Any], columns: Sequence[str] | None = None) -> None:
        # a statement, or a function of the dialect's name for constructs each dialect spells its own way
        self.stmt = stmt
        self.columns = list(columns) if columns is not None else None  # INSERT: the columns every row gives
        self._by_dialect: dict[str, tuple[str, tuple[str, ...] | None]] = {}

    def _for(self, conn: Connection) -> tuple[str, tuple[str, ...] | None]:
        d = conn.dialect
        found = self._by_dialect.get(d.name)
        if found is None:
            stmt = self.stmt(d.name) if callable(self.stmt) else self.stmt
            c = stmt.compile(dialect=d, column_keys=self.columns)
            found = self._by_dialect[d.name] = (str(c), tuple(c.positiontup) if d.positional else None)
        return found

    def many(self, conn: Connection, rows: Sequence[dict[str, Any]]) -> int:
        """Run for every row (dicts keyed by bind name); the rows changed, in all."""
        if not rows:
            return 0
        _, order = self._for(conn)
        params = list(map(itemgetter(*order), rows)) if order is not None else list(rows)
        if order is not None and len(order) == 1:
            params = [(p,) for p in params]
        return self._run(conn, params)

    def many_tuples(self, conn: Connection, names: Sequence[str], rows: Sequence[tuple]) -> int:
        """`many` for rows given as tuples of `names`, reordered to the dialect's parameter order: no dict is built
        per row."""
        if not rows:
            return 0
        _, order = self._for(conn)
        if order is None:
            return self.many(conn, [dict(zip(names, r)) for r in rows])
        if tuple(order) == tuple(names):
            return self._run(conn, list(rows))
        pick = itemgetter(*(list(names).index(k) for k in order))
        return self._run(conn, list(map(pick, rows)))

    def _run(self, conn: Connection, params: list) -> int:
        sql, _ = self._for(conn)
        cur = conn.connection.dbapi_connection.cursor()
        try:
            if len(params) == 1:
                cur.execute(sql, params[0])
            else:
                cur.executemany(sql, params)
            return cur.rowcount
        finally:
            cur.close()

    def one(self, conn: Connection, row: dict[str, Any]) -> int:
        return self.many(conn, [row])

    def rows(self, conn: Connection, row: dict[str, Any]) -> list[tuple]:
        """Run a query once and fetch every row."""
        sql, order = self._for(conn)
        cur = conn.connection.dbapi_connection.cursor()
        try:
            cur.execute(sql, tuple(row[k] for k in order) if order is not None else row)
            return cur.fetchall()
        finally:
            cur.close()

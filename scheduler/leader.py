"""Leader election for the control loop: any number of `spillover run` processes share one store, one leads.

On PostgreSQL the leader holds a session-level advisory lock on a connection of its own, kept open for as long as
it leads: the server releases the lock the moment that session ends (the process died, the connection was cut), so
a follower polling `pg_try_advisory_lock` takes over. On SQLite, a single host, the leader holds an exclusive
`flock` on a file next to the database, which the kernel releases when the process dies.

The lock alone is not enough: a leader that lost its lock may not know it yet (a cut connection is noticed at the
next query), and for that while two processes believe they lead. So each new leader increments the fencing epoch
in the `leadership` row, and every write the loop makes checks, in its own transaction, that the epoch is still its
own (`Store.fence`). A deposed leader's write fails with `Fenced` and writes nothing; since the loop writes every
intent before it acts, it cannot act on anything it could not record, and what it did record the new leader
finds in the store and repeats under the same idempotency key.
"""

from __future__ import annotations

import fcntl
import logging
import os
import socket
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, NamedTuple

from sqlalchemy import create_engine, select, text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import NullPool

from spillover.scheduler.errors import UserError
from spillover.scheduler.store import LEADERSHIP, Fenced, Store
from spillover.scheduler.tables import LeadershipRow

__all__ = ["Fenced", "Leader", "LeaderInfo", "NotLeaderError", "POLL_S", "leadership_for", "run_as_leader"]

log = logging.getLogger("spillover.leader")

LEADER_LOCK = 7263013  # next to the store's other advisory locks (migrations 7263011, event order 7263012)
POLL_S = 0.5  # how often a follower tries the lock
# TCP keepalives on the lock connection, both ends: a leader whose host or network died without closing the
# connection is noticed by the server within about idle + interval * count seconds, and its lock released.
KEEPALIVE_IDLE_S, KEEPALIVE_INTERVAL_S, KEEPALIVE_COUNT = 5, 2, 3
USER_TIMEOUT_MS = 15_000  # data unacknowledged this long also ends the connection (a partition mid-query)
STATEMENT_TIMEOUT_MS = 30_000  # no query on the lock connection hangs the loop longer than this


class NotLeaderError(UserError):
    """Another loop leads, and this command does not wait for its turn."""

    exit_code = 1


class LeaderInfo(NamedTuple):
    epoch: int
    holder: str
    acquired_at: float | None

    def __str__(self) -> str:
        since = ("-" if self.acquired_at is None else
                 datetime.fromtimestamp(self.acquired_at, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"))
        return f"{self.holder or 'unknown'} since {since} (epoch {self.epoch})"


def holder_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _first_line(e: BaseException) -> str:
    orig = getattr(e, "orig", None) or e
    return (str(orig).strip().splitlines() or [type(orig).__name__])[0]


class Leader:
    """Leadership of the loop over one store: `acquire` waits for it, `lost` says whether it still holds."""

    def __init__(self, store: Store, *, poll_s: float = POLL_S, holder: str | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.store = store
        self.poll_s = poll_s
        self.holder = holder or holder_name()
        self.epoch: int | None = None  # the epoch this process leads at, while it does
        self._sleep = sleep

    # ---- what each kind of lock provides -----------------------------------------------------------

    def _try_lock(self) -> bool:
        raise NotImplementedError

    def _unlock(self) -> None:
        raise NotImplementedError

    def _lock_lost(self) -> str | None:
        """Why the lock is no longer held, or None."""
        return None

    def _bump(self, now: float) -> int:
        with self.store.engine.begin() as conn:
            return _bump_epoch(conn, self.holder, now)

    def _read(self) -> LeaderInfo | None:
        with self.store.engine.connect() as conn:
            return _read_leader(conn)

    # ---- election --------------------------------------------------------------------------------

    def current(self) -> LeaderInfo | None:
        """The leadership row: who leads (or led last), since when, at which epoch."""
        return self._read()

    def try_acquire(self) -> int | None:
        """One attempt: the new epoch if this process now leads, else None."""
        if self.epoch is not None:
            return self.epoch
        if not self._try_lock():
            return None
        try:
            now = time.time()
            self.epoch = self._bump(now)
        except BaseException:
            self._unlock()
            raise
        # writes from here on are this epoch's; anything still in flight from an older one is refused
        self.store.fence(self.epoch)
        log.info("leading at epoch %d (%s)", self.epoch, self.holder)
        return self.epoch

    def acquire(self, *, stop: Callable[[], bool] = lambda: False) -> int | None:
        """Follow until this process leads; its epoch, or None when `stop` said so first."""
        said: LeaderInfo | None = None
        failing: str | None = None
        while not stop():
            try:
                epoch = self.try_acquire()
                if epoch is not None:
                    return epoch
                info = self._read()
                if failing is not None:
                    log.warning("leader election: the store answers again")
                    failing = None
            except (SQLAlchemyError, OSError) as e:
                # the store is down or restarting: keep trying, say so once
                self._unlock()
                why = _first_line(e)
                retry_s = max(self.poll_s, 1.0)
                if why != failing:
                    log.warning("leader election: cannot reach the store (%s); retrying every %gs", why, retry_s)
                    failing = why
                self._sleep(retry_s)
                continue
            if info != said and info is not None:
                log.info("following: leader is %s", info)
                said = info
            self._sleep(self.poll_s)
        return None

    def lost(self) -> str | None:
        """Cheap check, once a cycle: why this process no longer leads, or None while it does."""
        if self.epoch is None:
            return "not leading"
        why = self._lock_lost()
        if why is None:
            try:
                info = self._read()
            except SQLAlchemyError as e:
                why = f"cannot read the leadership epoch ({_first_line(e)})"
            else:
                if info is None:
                    why = "the leadership row is gone"
                elif info.epoch != self.epoch:
                    why = f"a newer leader took over: {info}"
        return why

    def pause(self, seconds: float) -> None:
        self._sleep(seconds)

    def release(self) -> None:
        """Stop leading (or give up trying): the lock is let go. The store stays fenced at the old epoch, so
        nothing this process still holds can write as the leader."""
        self.epoch = None
        self._unlock()


class PostgresLeader(Leader):
    """The advisory lock, on a dedicated connection with keepalives (not one of the store's pool)."""

    def __init__(self, store: Store, **kwargs: Any) -> None:
        super().__init__(store, **kwargs)
        # same server and credentials as the store; NullPool: the connection is this object's alone
        self._engine = create_engine(store.engine.url, poolclass=NullPool, connect_args={
            "keepalives": 1, "keepalives_idle": KEEPALIVE_IDLE_S, "keepalives_interval": KEEPALIVE_INTERVAL_S,
            "keepalives_count": KEEPALIVE_COUNT, "tcp_user_timeout": USER_TIMEOUT_MS, "connect_timeout": 5,
            "application_name": f"spillover-leader {self.holder}"[:63]})
        self._conn: Connection | None = None

    def _connection(self) -> Connection:
        if self._conn is None or self._conn.closed or self._conn.invalidated:
            conn = self._engine.connect().execution_options(isolation_level="AUTOCOMMIT")
            try:
                # the server's side of the keepalives: it releases a dead leader's lock, not only the client notices
                for name, value in (("tcp_keepalives_idle", KEEPALIVE_IDLE_S),
                                    ("tcp_keepalives_interval", KEEPALIVE_INTERVAL_S),
                                    ("tcp_keepalives_count", KEEPALIVE_COUNT),
                                    ("tcp_user_timeout", USER_TIMEOUT_MS),
                                    ("statement_timeout", STATEMENT_TIMEOUT_MS),
                                    ("idle_session_timeout", 0), ("idle_in_transaction_session_timeout", 0)):
                    conn.execute(text(f"SET {name} = {int(value)}"))
            except BaseException:
                conn.close()
                raise
            self._conn = conn
        return self._conn

    def _try_lock(self) -> bool:
        return bool(self._connection().execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": LEADER_LOCK}).scalar())

    def _bump(self, now: float) -> int:
        # on the lock connection, in one statement (one transaction): it waits for a deposed leader's write in
        # flight, which holds the row, and every write of that leader after it sees the new epoch
        return _bump_epoch(self._connection(), self.holder, now)

    def _read(self) -> LeaderInfo | None:
        return _read_leader(self._connection())

    def _lock_lost(self) -> str | None:
        # on the lock's own session, never a new one: a new session would not hold the lock
        conn = self._conn
        if conn is None or conn.closed or conn.invalidated:
            return "the lock connection to the store is closed"
        try:
            conn.execute(text("SELECT 1"))
        except SQLAlchemyError as e:
            return f"the lock connection to the store was lost ({_first_line(e)})"
        return None

    def _unlock(self) -> None:
        # closing the session releases its advisory lock on the server
        if self._conn is not None:
            try:
                self._conn.close()
            except SQLAlchemyError:
                pass
            self._conn = None


class FileLeader(Leader):
    """An exclusive flock on `<database>.leader`: SQLite stores live on one host, and so do their loops."""

    def __init__(self, store: Store, path: Path, **kwargs: Any) -> None:
        super().__init__(store, **kwargs)
        self.path = path
        self._fd: int | None = None

    def _try_lock(self) -> bool:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        return True

    def _lock_lost(self) -> str | None:
        # a lock file removed (or replaced) under the leader lets another process lock a new one
        try:
            same = self._fd is not None and os.fstat(self._fd).st_ino == os.stat(self.path).st_ino
        except OSError:
            same = False
        return None if same else f"the lock file {self.path} was removed or replaced"

    def _unlock(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class SoleLeader(Leader):
    """An in-memory store: only this process can see it, so it leads."""

    def _try_lock(self) -> bool:
        return True

    def _unlock(self) -> None:
        pass


def leadership_for(store: Store, *, poll_s: float = POLL_S) -> Leader:
    """The election that fits the store: an advisory lock on PostgreSQL, a lock file next to a SQLite file."""
    url = store.engine.url
    if url.get_backend_name() == "postgresql":
        return PostgresLeader(store, poll_s=poll_s)
    database = url.database or ""
    if url.get_backend_name() == "sqlite" and database not in ("", ":memory:") and not database.startswith("file:"):
        return FileLeader(store, Path(database + ".leader"), poll_s=poll_s)
    return SoleLeader(store, poll_s=poll_s)


def run_as_leader(leader: Leader, start: Callable[[int], Any], *, max_cycles: int | None = None,
                  wait: bool = True) -> None:
    """Follow until leading, then run the loop `start(epoch)` builds (from the store, afresh each time: a new
    leader knows nothing but what the store says) for `max_cycles` cycles in all, or for ever. On losing the
    lead the loop stops before its next cycle, or at its next write, which is refused, and this process goes
    back to following. With `wait` off, NotLeaderError when another loop leads."""
    done = 0
    try:
        while max_cycles is None or done < max_cycles:
            epoch = leader.acquire() if wait else leader.try_acquire()
            if epoch is None:
                raise NotLeaderError(f"another loop leads: {leader.current()}; this one runs only when none does")
            taken = time.monotonic()
            why: str | None = None
            calls = 0

            def should_stop() -> bool:
                # called before every cycle: the n-th call comes after n - 1 cycles
                nonlocal why, calls
                calls += 1
                why = leader.lost()
                return why is not None

            try:
                loop = start(epoch)
                _say_first_cycle(loop, epoch, taken)
                loop.run(max_cycles=None if max_cycles is None else max_cycles - done, should_stop=should_stop)
            except Fenced as e:
                why = str(e)
            except (SQLAlchemyError, OSError) as e:
                # the store failed mid-cycle: let another replica lead if it can reach the store; this one
                # follows again, and should it lead again it starts over from the store, as after a crash
                why = f"the store failed mid-cycle ({_first_line(e)})"
            done += max(0, calls - 1)
            leader.release()
            if why is None:
                return  # the cycles asked for are done
            log.warning("stopped leading at epoch %d: %s; following again", epoch, why)
            # a process that just lost the lead (its connection was cut, the store failed it) gives a follower
            # that polls meanwhile the first chance to take over
            leader.pause(2 * leader.poll_s)
    finally:
        leader.release()


def _say_first_cycle(loop: Any, epoch: int, taken: float) -> None:
    """Log when the new leader's first cycle ends (how long a failover takes), measured where the cycle ends rather
    than after the loop's sleep that follows it."""
    inner = loop.run_cycle

    def first(*args: Any, **kwargs: Any) -> Any:
        report = inner(*args, **kwargs)
        loop.run_cycle = inner
        log.info("leading at epoch %d: first cycle done %.3fs after taking the lead", epoch, time.monotonic() - taken)
        return report

    loop.run_cycle = first


def _bump_epoch(conn: Connection, holder: str, now: float) -> int:
    """The next epoch, with this holder, in one statement: the row is created by the first leader ever."""
    t = LeadershipRow.__table__
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    ins = insert(t).values(name=LEADERSHIP, epoch=1, holder=holder[:200], acquired_at=now)
    stmt = ins.on_conflict_do_update(index_elements=["name"], set_={
        "epoch": t.c.epoch + 1, "holder": ins.excluded.holder, "acquired_at": ins.excluded.acquired_at})
    return int(conn.execute(stmt.returning(t.c.epoch)).scalar_one())


def _read_leader(conn: Connection) -> LeaderInfo | None:
    t = LeadershipRow.__table__
    row = conn.execute(select(t.c.epoch, t.c.holder, t.c.acquired_at).where(t.c.name == LEADERSHIP)).first()
    return None if row is None else LeaderInfo(int(row[0]), row[1] or "", row[2])

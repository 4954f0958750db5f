"""Keep SQLite off the event loop: one writer thread, one reader thread.

SQLite allows one writer at a time, and WAL lets readers run alongside it. So every write
goes through a single-thread executor that owns the write connection (writes are serialised
in submission order, no lock contention), and API reads go through a second thread with its
own connection, so a long ingest batch never makes `GET /devices` wait.

Group commit: `write_grouped` writes that queue up while the writer is busy (ingest batches,
command submits and sends) run together in ONE transaction, each in its own savepoint
(`Store.transaction` nests), so they share one fsync instead of waiting for one each. Plain
`write` calls keep a transaction of their own (they may run scripts: `executescript` commits
whatever is open), in the same FIFO order. A write whose function raises rolls back alone (its
savepoint) and gets its exception;
every caller gets its result only after the shared COMMIT (`synchronous=FULL`) returned, so
nothing is reported done before it is durable, exactly as with one transaction per write.

The commands themselves are in a file of their own (`CommandDatabase`, issue 18, session 11):
a command's submit, its send record and a device's reply commit there, on its own writer
thread, and never wait for this one. The command lane below is for the writes here that send
devices commands (a kind service's change: a tube step setting diverters, a locker opening a
door).

Command lane: `write_first` writes overtake every queued write that is not itself a
command-lane write, and share a transaction only with each other: such a write waits for at
most the write the writer is running when it arrives (and a group in progress ends after its
current write: the command-lane writes join that transaction and it commits at once), never
for the queue of event batches behind it. The other writes keep their FIFO order among
themselves. Durability is the same for every lane:
a caller is answered only after the COMMIT that holds its write.

A long write need not be waited for either (issue 18, session 8): while a group runs, the
store offers `lane_waiting()` and `lane_join()`, and a write that works in chunks (an ingest
batch: `gateway.devices.ingest._Batch.flush`, 128 events at a time) asks between two chunks;
when command-lane writes wait, they run in the transaction at that point and it commits
midway (`Store.commit_midway`: one fsync for what the batch wrote so far and the commands),
then the rest of the write goes on in a new transaction with the same savepoints. The lane's
callers, and the group's writes already finished, are answered after that commit; the write
in progress after its own last commit (an ingest batch acks then). With no command waiting a
batch commits once, as before.

After each write commits, the stream items it appended (the outbox) are handed to the
`on_commit` callback on the event loop, from the writer thread, with `call_soon_threadsafe`.
Callbacks run in FIFO order, so subscribers see items in commit order (= stream id order).
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, Self, TypeVar

from gateway.storage.store import (
    CommandStore,
    MidwayCommitError,
    Store,
    StreamItem,
    attach_readonly,
    command_outbox,
    commands_path,
    connect,
    forget_outbox,
    migrate_all,
    migrate_commands,
    migrate_kind,
    take_commands,
)

log = logging.getLogger("gateway.db")

P = ParamSpec("P")
T = TypeVar("T")
DEFER_S = 0.05  # the longest a `defer`red write waits for another to share its commit
# a write waiting for the writer thread: (fn, args, kwargs, its future, may be grouped)
_Job = tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any], "asyncio.Future[Any]", bool]


class Database:
    """Async access to the store. Use `async with Database(path, on_commit) as db`.

    The commands live in a file of their own beside it (`commands_path`) with its own writer
    and reader threads: `db.commands`, a `CommandDatabase` (issue 18). Its committed stream
    items go to `command_listeners` on the loop at once (`CommandService` wakes its waiters)
    and are copied, in order and once, into this database's stream (`_follow`), whose
    `on_commit` then sees them like any other item. This database's reader sees the command
    file too (attached read-only as `cmds`: `/devices` lists pending commands)."""

    command_file = True  # a command file beside it (False for the command file itself)

    def __init__(self, path: str | Path,
                 on_commit: Callable[[list[StreamItem]], None] | None = None, *,
                 kind_migrations: Mapping[str, Sequence[str]] | None = None) -> None:
        self.path = Path(path)
        self.on_commit = on_commit
        # the device kinds' own tables, after the core schema (gateway.kinds.registry.migrations)
        self.kind_migrations = dict(kind_migrations or {})
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="db-writer")
        self._reader = ThreadPoolExecutor(1, thread_name_prefix="db-reader")
        self._local = threading.local()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: deque[_Job] = deque()
        self._first: deque[_Job] = deque()  # the command lane (`write_first`): served first
        self.groups = 0          # transactions the writer ran for queued writes
        self.grouped_writes = 0  # writes that shared a transaction with others
        self.first_writes = 0    # command-lane writes
        self.preempted = 0       # groups of queued writes ended early for command-lane writes
        self.midway = 0          # transactions committed inside a write for command-lane writes
        # the group being written (`_run_group`): its jobs, the outcomes of those done, how
        # many of them are settled already (committed midway), and whether a join runs now
        self._group: list[_Job] = []
        self._outcomes: list[tuple[Any, BaseException | None]] = []
        self._settled = 0
        self._joining = False
        self.commands: CommandDatabase | None = None
        self.command_listeners: list[Callable[[list[StreamItem]], None]] = []
        self._follow_wake = asyncio.Event()
        self._follower: asyncio.Task[None] | None = None
        self._copied = 0  # command-file stream items copied into the main stream up to
        self._background: set[asyncio.Task[Any]] = set()  # outbox rows being forgotten
        # `defer`red writes, held on the loop until the next write or `DEFER_S` (loop only)
        self._held: list[_Job] = []
        self._held_timer: asyncio.TimerHandle | None = None
        self._outbox_retry = False  # a move failed: `_follow` moves what the outbox holds

    async def __aenter__(self) -> Self:
        self._loop = asyncio.get_running_loop()
        await self._loop.run_in_executor(self._writer, self._open, False)
        if self.command_file:
            self.commands = CommandDatabase(commands_path(self.path), self.path,
                                            self._commands_committed)
            await self.commands.__aenter__()
        await self._loop.run_in_executor(self._reader, self._open, True)
        if self.commands is not None:
            while rows := await self.read(command_outbox):  # what a crash left there
                await self.move_command_outbox(rows)
                if self._outbox_retry:  # the command file cannot take them now: `_follow`
                    break
                await asyncio.gather(*self._background)  # forgotten before the next page
            self._copied = await self.read(Store.command_stream_upto)
            await self._copy_command_stream()  # what a crash left uncopied
            self._follower = self._loop.create_task(self._follow(), name="command-stream")
        return self

    async def move_command_outbox(self, rows: list[tuple[int, dict[str, Any]]] | None = None
                                  ) -> list[dict[str, Any]]:
        """Move a kind's commands from the outbox (committed with its state: `rows`, or the
        oldest rows there) into the command file; returns those inserted there (the others
        were there already). The outbox rows go after, in the background (moved again after
        a crash meanwhile: found by their keys, not inserted twice)."""
        assert self.commands is not None
        if rows is None:
            rows = await self.read(command_outbox)
        if not rows:
            return []
        try:
            inserted = await self.commands.write_grouped(take_commands, rows)
        except Exception:  # (a full disk): they are safe in the outbox; `_follow` retries
            log.exception("moving %d commands to the command file failed; retrying", len(rows))
            self._outbox_retry = True
            self._follow_wake.set()
            return []
        task = asyncio.get_running_loop().create_task(
            self.write_grouped(forget_outbox, [oid for oid, _ in rows]))
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return inserted

    def _commands_committed(self, items: list[StreamItem]) -> None:
        """On the loop: stream items the command file committed."""
        for listener in list(self.command_listeners):
            try:
                listener(items)
            except Exception:
                log.exception("command listener failed")
        self._follow_wake.set()

    async def _copy_command_stream(self) -> bool:
        """Copy the command file's new stream items into the main stream; True if it did."""
        assert self.commands is not None
        moved = False
        while True:
            items = await self.commands.read(Store.command_stream_after, self._copied)
            if not items:
                return moved
            self._copied = await self.write_grouped(Store.append_command_stream, items)
            moved = True

    async def _follow(self) -> None:
        """Copy the command file's stream items into the main stream as they commit, and
        drop the copied ones from the command file (at most once a second)."""
        assert self.commands is not None
        pruned, last_prune = self._copied, 0.0
        while True:
            self._follow_wake.clear()
            try:
                if self._outbox_retry:
                    self._outbox_retry = False
                    while rows := await self.read(command_outbox):
                        if not await self.move_command_outbox(rows) and self._outbox_retry:
                            raise RuntimeError("the command outbox could not be moved")
                        await asyncio.gather(*self._background)
                await self._copy_command_stream()
                loop = asyncio.get_running_loop()
                if self._copied > pruned and loop.time() - last_prune >= 1.0:
                    # (shares the next command write's commit: never one of its own on a
                    # command's path; what a crash leaves is copied only once, by its counter)
                    self.commands.defer(Store.prune_command_stream, self._copied
                                        ).add_done_callback(_log_failure)
                    pruned, last_prune = self._copied, loop.time()
            except asyncio.CancelledError:
                raise
            except Exception:  # copied on the next wake, or at the next start
                log.exception("copying command stream items failed; retrying")
                await asyncio.sleep(1.0)
                continue
            timer = asyncio.get_running_loop().call_later(1.0, self._follow_wake.set)
            try:  # (no task per wait, as `wait_for` would make)
                await self._follow_wake.wait()
            finally:
                timer.cancel()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _open(self, readonly: bool) -> None:
        conn = connect(self.path, readonly=readonly)
        if readonly:
            attach_readonly(conn, commands_path(self.path), "cmds")
        else:
            version = migrate_all(conn, self.path)
            for kind, steps in self.kind_migrations.items():
                migrate_kind(conn, kind, steps)
            pages = os.environ.get("PHYGITAL_DB_MAX_PAGES")  # fault injection: a full disk
            if pages:
                conn.execute(f"PRAGMA max_page_count = {int(pages)}")
            log.info("db open path=%s schema=v%d journal=wal synchronous=full", self.path, version)
        self._local.store = Store(conn)

    def _close_conn(self) -> None:
        store: Store | None = getattr(self._local, "store", None)
        if store is not None:
            store.conn.close()
            self._local.store = None

    async def close(self) -> None:
        if self._loop is None:
            return
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        if self.commands is not None:  # their stream items are copied below, not at next start
            await self.commands.flush_held()
        if self._follower is not None:
            self._follower.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._follower
            self._follower = None
            try:  # the last items, so the main stream is whole at a clean stop
                await self._copy_command_stream()
            except Exception:
                log.exception("copying command stream items failed; copied at the next start")
        if self.commands is not None:
            await self.commands.close()
        await self.flush_held()  # written before the writer stops
        loop, self._loop = self._loop, None
        for ex in (self._reader, self._writer):
            try:
                await loop.run_in_executor(ex, self._close_conn)
            finally:
                ex.shutdown(wait=True)

    def _run_write(self, fn: Callable[..., T], args: tuple[Any, ...], kwargs: dict[str, Any]) -> T:
        store: Store = self._local.store
        try:
            return fn(store, *args, **kwargs)
        finally:
            if store.conn.in_transaction:  # a bug: fn left a transaction open
                store.conn.execute("ROLLBACK")
                store.take_outbox()
                log.error("write left a transaction open fn=%s; rolled back", fn.__name__)
            # what committed is announced even if fn raised after its commit
            items = store.take_outbox()
            if items and self.on_commit is not None and self._loop is not None:
                self._loop.call_soon_threadsafe(self.on_commit, items)

    async def write(self, fn: Callable[Concatenate[Store, P], T], *args: P.args,
                    **kwargs: P.kwargs) -> T:
        """Run `fn(store, ...)` on the writer thread. `fn` opens its own transaction."""
        return await self._submit(fn, args, kwargs, False)

    async def write_grouped(self, fn: Callable[Concatenate[Store, P], T], *args: P.args,
                            **kwargs: P.kwargs) -> T:
        """`write`, but `fn` may share one transaction (one fsync) with other grouped writes
        queued at the same time: its `store.transaction()` becomes a savepoint. `fn` must
        only use `store.transaction()` and plain statements (no scripts, no BEGIN/COMMIT)."""
        return await self._submit(fn, args, kwargs, True)

    async def write_first(self, fn: Callable[Concatenate[Store, P], T], *args: P.args,
                          **kwargs: P.kwargs) -> T:
        """`write_grouped` in the command lane: runs before every queued write that is not
        itself `write_first`, in a transaction shared only with other command-lane writes
        (or with the one group already running, which then commits at once). For the short
        writes of a command's path (submit, send record, reply); same rules as
        `write_grouped` for `fn`."""
        return await self._submit(fn, args, kwargs, True, first=True)

    def defer(self, fn: Callable[Concatenate[Store, P], T], *args: P.args,
              **kwargs: P.kwargs) -> asyncio.Future[T]:
        """`write_grouped` for a write that needs no commit of its own: it is queued (now, in
        order) with the next write anyone asks for and shares its transaction, or goes alone
        after `DEFER_S`. Returns the future of its outcome (settled once committed).

        For what a crash may lose without harm because the device says it again: a command's
        send record and a device's `accepted` (issue 18: a command's path then waits for two
        commits, its submit and its outcome, instead of four)."""
        if self._loop is None:
            raise RuntimeError("database is closed")
        fut: asyncio.Future[T] = self._loop.create_future()
        self._held.append((fn, args, kwargs, fut, True))
        if self._held_timer is None:
            self._held_timer = self._loop.call_later(DEFER_S, self._release_held)
        return fut

    async def flush_held(self) -> None:
        """Write the `defer`red writes now and wait for them (their outcomes are theirs)."""
        if self._held:
            held = [job[3] for job in self._held]
            self._release_held()
            await asyncio.gather(*held, return_exceptions=True)

    def _release_held(self, run: bool = True) -> None:
        """On the loop: queue the held writes (`run`: and wake the writer; not when the
        caller queues a write right behind them, so that the writer finds both)."""
        if self._held_timer is not None:
            self._held_timer.cancel()
            self._held_timer = None
        if self._held and self._loop is not None:
            self._queue.extend(self._held)
            self._held.clear()
            if run:
                self._loop.run_in_executor(self._writer, self._run_queued)

    async def _submit(self, fn: Callable[..., T], args: tuple[Any, ...],
                      kwargs: dict[str, Any], grouped: bool, first: bool = False) -> T:
        if self._loop is None:
            raise RuntimeError("database is closed")
        fut: asyncio.Future[T] = self._loop.create_future()
        if self._held:
            self._release_held(run=False)
        (self._first if first else self._queue).append((fn, args, kwargs, fut, grouped))
        self._loop.run_in_executor(self._writer, self._run_queued)
        return await fut

    def _run_queued(self) -> None:
        """On the writer thread: run the queued writes, command-lane writes first (together,
        in one transaction), then the others in order, consecutive grouped ones in one
        transaction. Between two writes of such a group, command-lane writes that arrived
        meanwhile join it and it commits at once (the rest waits for the next transaction)."""
        while True:  # nothing at once: an earlier call took them
            if self._first:
                group = []
                while self._first:
                    group.append(self._first.popleft())
                self.first_writes += len(group)
                self._run_group(group)
            elif self._queue:
                job = self._queue.popleft()
                if job[4]:
                    self._run_group([job], more=True)
                else:
                    self._run_group([job])
            else:
                return

    def _next_in_group(self) -> tuple[_Job | None, bool]:
        """While a group of queued grouped writes runs: `(next write to add, last one)`.
        A command-lane write is the last one: it joins, then the group commits."""
        if self._first:
            self.preempted += 1
            self.first_writes += 1
            return self._first.popleft(), True
        if self._queue and self._queue[0][4]:
            return self._queue.popleft(), False
        return None, True

    def _run_group(self, group: list[_Job], more: bool = False) -> None:
        """Run `group`: a single plain write in its own transaction, grouped writes in one
        shared transaction. `more`: while it runs, keep adding the grouped writes queued behind
        it, until a command-lane write joins (`_next_in_group`)."""
        outcomes: list[tuple[Any, BaseException | None]] = []
        if len(group) == 1 and not more:
            fn, args, kwargs, _, _ = group[0]
            try:
                outcomes.append((self._run_write(fn, args, kwargs), None))
            except Exception as exc:  # noqa: BLE001 - handed to the caller
                outcomes.append((None, exc))
        else:
            store: Store = self._local.store
            self._group, self._outcomes, self._settled = group, outcomes, 0
            store.lane_waiting, store.lane_join = self._lane_waiting, self._lane_join
            try:
                with store.transaction():
                    i = 0
                    while i < len(group):
                        fn, args, kwargs, _, _ = group[i]
                        try:
                            outcomes.append((fn(store, *args, **kwargs), None))
                        except MidwayCommitError:
                            raise  # the transaction is lost: the rest of the group fails
                        except Exception as exc:  # noqa: BLE001 - rolled back alone
                            outcomes.append((None, exc))
                        i += 1
                        if more and i == len(group):
                            nxt, last = self._next_in_group()
                            if nxt is not None:
                                group.append(nxt)
                            more = not last
            except Exception as exc:  # noqa: BLE001 - the commit failed: nothing is durable
                # (beyond what `_lane_join` committed and settled midway)
                outcomes[self._settled:] = [(None, exc)] * (len(group) - self._settled)
            finally:
                store.lane_waiting = store.lane_join = None
                self._group, self._outcomes = [], []
            if len(group) > 1:
                self.groups += 1
                self.grouped_writes += len(group)
            items = store.take_outbox()
            if items and self.on_commit is not None and self._loop is not None:
                self._loop.call_soon_threadsafe(self.on_commit, items)
        loop = self._loop
        if loop is not None:
            for (_, _, _, fut, _), (result, error) in zip(group[self._settled:],
                                                          outcomes[self._settled:]):
                loop.call_soon_threadsafe(_settle, fut, result, error)
        self._settled = 0

    def _lane_waiting(self) -> bool:
        """`Store.lane_waiting` while a group runs: command-lane writes wait (and no join runs)."""
        return bool(self._first) and not self._joining

    def _lane_join(self) -> None:
        """`Store.lane_join`, called by a write of the group in progress between two chunks
        of its work (an ingest batch of 2,048 events): the command-lane writes waiting now run
        in this transaction, each in its savepoint, then it commits (`Store.commit_midway`) and
        goes on for the rest of the write. The lane writes and the group's writes finished so
        far are answered now: they are durable. The write in progress is answered at the end,
        as usual (what it wrote before this point is durable already; an ingest batch acks
        after its last commit)."""
        if not self._first or self._joining:
            return
        store: Store = self._local.store
        lane: list[_Job] = []
        outcomes: list[tuple[Any, BaseException | None]] = []
        self._joining = True
        try:
            while self._first:
                job = self._first.popleft()
                lane.append(job)
                fn, args, kwargs, _, _ = job
                try:
                    outcomes.append((fn(store, *args, **kwargs), None))
                except Exception as exc:  # noqa: BLE001 - rolled back alone
                    outcomes.append((None, exc))
            self.first_writes += len(lane)
            try:
                items = store.commit_midway()
            except Exception as exc:
                # not committed: the lane writes are lost with the transaction; the write in
                # progress gets the exception (its group then fails as a whole)
                self._answer(lane, [(None, exc)] * len(lane))
                raise MidwayCommitError(f"commit for the command lane failed: {exc!r}") from exc
        finally:
            self._joining = False
        # committed: answered as such whatever happens next
        self.midway += 1
        if items and self.on_commit is not None and self._loop is not None:
            self._loop.call_soon_threadsafe(self.on_commit, items)
        done = len(self._outcomes)  # the group's writes finished before the one in progress
        self._answer(self._group[self._settled:done], self._outcomes[self._settled:done])
        self._settled = done
        self._answer(lane, outcomes)
        try:
            store.reopen_midway()
        except Exception as exc:  # the rest of the write cannot go on: it fails
            raise MidwayCommitError(f"transaction not reopened after a cut: {exc!r}") from exc

    def _answer(self, jobs: list[_Job], outcomes: list[tuple[Any, BaseException | None]]) -> None:
        loop = self._loop
        if loop is not None:
            for (_, _, _, fut, _), (result, error) in zip(jobs, outcomes):
                loop.call_soon_threadsafe(_settle, fut, result, error)

    def _run_read(self, fn: Callable[..., T], args: tuple[Any, ...], kwargs: dict[str, Any]) -> T:
        return fn(self._local.store, *args, **kwargs)

    async def read(self, fn: Callable[Concatenate[Store, P], T], *args: P.args,
                   **kwargs: P.kwargs) -> T:
        """Run `fn(store, ...)` on the reader thread (sees committed data only)."""
        if self._loop is None:
            raise RuntimeError("database is closed")
        return await self._loop.run_in_executor(self._reader, self._run_read, fn, args, kwargs)


def _log_failure(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled() and fut.exception() is not None:
        log.error("deferred write failed: %r", fut.exception())


def _settle(fut: asyncio.Future[Any], result: Any, exc: BaseException | None) -> None:
    if fut.done():  # the caller was cancelled
        return
    if exc is not None:
        fut.set_exception(exc)
    else:
        fut.set_result(result)


class CommandDatabase(Database):
    """The command file (`Database.commands`): the same writer and reader threads, on a file
    of its own, so a command's write commits alone (a small fsync) instead of waiting for the
    event batch at the main writer and sharing its commit (docs/benchmarks.md, "Issue 18,
    session 11"). The gateway's file is attached read-only as `gw` (a command checks its
    device; `pending_commands` joins `devices`); every write here goes to the command file
    only, so its `BEGIN IMMEDIATE` takes no lock on the gateway's file."""

    command_file = False

    def __init__(self, path: str | Path, main_path: str | Path,
                 on_commit: Callable[[list[StreamItem]], None] | None = None) -> None:
        super().__init__(path, on_commit)
        self.main_path = Path(main_path)

    def _open(self, readonly: bool) -> None:
        conn = connect(self.path, readonly=readonly)
        if not readonly:
            migrate_commands(conn)
            if os.environ.get("PHYGITAL_DB_MAX_PAGES"):  # a full disk: this file cannot grow either
                pages = conn.execute("PRAGMA page_count").fetchone()[0]
                conn.execute(f"PRAGMA max_page_count = {int(pages)}")
        attach_readonly(conn, self.main_path, "gw")
        self._local.store = CommandStore(conn)

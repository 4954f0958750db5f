"""A command's write cuts into a long ingest batch (issue 18, session 8): the writer applies a
batch `CHUNK` events at a time in one transaction; when a command-lane write waits between two
chunks, what is applied so far and the command's write commit together (midway), and the rest
of the batch goes on in the next transaction. Order only, on a real SQLite file: no timing."""
import asyncio
import contextlib
import sqlite3
import threading

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.devices import ingest
from gateway.devices.ingest import CHUNK, apply_batch
from gateway.storage.db import Database
from gateway.storage.store import MidwayCommitError, Store, connect, migrate
from tests.support.envelopes import birth, evt

DEVICES = ("pad-1", "pad-2", "pad-3", "pad-4")
EVENTS = 5 * CHUNK - 40  # five chunks, the last one short


def _events() -> list[tuple[str, bytes]]:
    """EVENTS events over the four devices, interleaved (seqs 1.. per device)."""
    seq = dict.fromkeys(DEVICES, 0)
    out = []
    for i in range(EVENTS):
        dev = DEVICES[i % len(DEVICES)]
        seq[dev] += 1
        out.append(evt(seq[dev], dev=dev))
    return out


def _lane(store, name):
    """A command-lane write that leaves a stream item (`on_commit` shows its transaction)."""
    with store.transaction():
        store.append_stream("command", {"n": name})
    return name


class _Hold:
    """A stream hook (writer thread): at the first event item it signals `reached` and holds
    the writer until `gate` is set, so the test can queue a command write mid-batch."""

    def __init__(self) -> None:
        self.reached = threading.Event()
        self.gate = threading.Event()

    def __call__(self, store, item) -> None:
        if item.kind == "event" and not self.reached.is_set():
            self.reached.set()
            assert self.gate.wait(30), "the test never opened the gate"


async def _command_during_batch(db, hold, events=None, done=None, return_exceptions=False):
    """Start an ingest batch, wait until the writer holds in its first chunk, queue a command
    write in the lane, let the writer go; the (batch, command) outcomes. `done` records which
    of the two was answered first."""
    batch = asyncio.ensure_future(db.write_grouped(apply_batch, events or _events(), 2))
    await asyncio.to_thread(hold.reached.wait, 30)  # the writer is in the first chunk
    command = asyncio.ensure_future(db.write_first(_lane, "command"))
    if done is not None:
        batch.add_done_callback(lambda _: done.append("batch"))
        command.add_done_callback(lambda _: done.append("command"))
    await asyncio.sleep(0)  # the command write is queued in the lane
    hold.gate.set()
    return await asyncio.gather(batch, command, return_exceptions=return_exceptions)


def _commits_of(commits):
    """Each commit as (events in it, names of the lane writes in it)."""
    return [(sum(1 for i in items if i.kind == "event"),
             [i.data["n"] for i in items if i.kind == "command"]) for items in commits]


async def _setup(db):
    births = [birth(dev=d) for d in DEVICES]
    await db.write_grouped(apply_batch, births, 1)


@contextlib.asynccontextmanager
async def _ready_db(tmp_path, commits: list):
    """A database with the pads born and `commits` cleared."""
    db = Database(tmp_path / "gw.db", on_commit=commits.append)
    async with db:
        await _setup(db)
        commits.clear()
        yield db


@contextlib.asynccontextmanager
async def _held_db(tmp_path, commits: list):
    """`_ready_db` with a `_Hold` installed."""
    async with _ready_db(tmp_path, commits) as db:
        hold = _Hold()
        await db.write(lambda store: store.stream_hooks.append(hold))
        yield db, hold


def test_a_command_write_that_waits_during_a_long_batch_commits_before_its_last_chunk(tmp_path):
    commits: list = []

    async def main():
        async with _held_db(tmp_path, commits) as (db, hold):
            done: list[str] = []
            eff, name = await _command_during_batch(db, hold, done=done)
            # the command's write committed with the first chunk, the rest of the batch after it
            assert _commits_of(commits) == [(CHUNK, ["command"]), (EVENTS - CHUNK, [])]
            assert done == ["command", "batch"]  # the command was answered first
            assert name == "command" and db.midway == 1
            # nothing lost, nothing doubled, every device acked up to its last seq
            assert eff.persisted == EVENTS and eff.duplicates == 0
            per_device = EVENTS // len(DEVICES)
            assert eff.acks == {d: ("e1", per_device) for d in DEVICES}
            stored, counters, acks = await db.read(lambda store: (
                sorted((e["device"], e["seq"]) for e in store.list_events(limit=10_000)),
                store.counters(),
                {d: store.get_watermark(d, "e1") for d in DEVICES}))
            assert stored == sorted((d, s) for d in DEVICES for s in range(1, per_device + 1))
            assert counters["events_persisted"] == EVENTS
            assert counters["messages_received"] == EVENTS + len(DEVICES)  # and the births
            assert acks == dict.fromkeys(DEVICES, per_device)

    asyncio.run(main())


def test_a_batch_of_the_size_seen_at_saturation_is_cut_too(tmp_path):
    """Issue 18, session 9: at saturation the writer commits batches of ~90 events (it is the
    bottleneck, so batches stay small; docs/benchmarks.md). A command that waits during one
    commits before its end, not with it (chunks of 128 never cut such a batch)."""
    commits: list = []
    events = _events()[:96]

    async def main():
        async with _held_db(tmp_path, commits) as (db, hold):
            eff, _ = await _command_during_batch(db, hold, events=events)
            cs = _commits_of(commits)
            assert len(cs) == 2, f"one commit for batch and command: {cs}"
            first, rest = cs
            assert first[1] == ["command"] and first[0] < len(events)
            assert first[0] + rest[0] == len(events) == eff.persisted

    asyncio.run(main())


def test_with_no_command_waiting_a_long_batch_commits_once(tmp_path):
    """The control: chunks cost no extra commit when no command waits."""
    commits: list = []

    async def main():
        async with _ready_db(tmp_path, commits) as db:
            eff = await db.write_grouped(apply_batch, _events(), 2)
            assert _commits_of(commits) == [(EVENTS, [])]
            assert db.midway == 0 and eff.persisted == EVENTS

    asyncio.run(main())


def test_a_batch_that_fails_after_a_midway_commit_applies_only_its_rest_again(tmp_path):
    """A message that trips a bug after the midway commit: the fast path's savepoint rolls back
    what came after that commit, and only the messages after it are applied again one by one
    (not the committed ones: they would count as duplicates, and the counters twice)."""
    commits: list = []

    async def main():
        async with _ready_db(tmp_path, commits) as db:
            hold = _Hold()
            failed: list[int] = []

            # the first event with this seq is in the third chunk (events go round the devices)
            trip_seq = (2 * CHUNK + 2 * len(DEVICES)) // len(DEVICES) + 1

            def trip(store, item):  # one event of the third chunk fails once
                if item.kind == "event" and item.data["seq"] == trip_seq and not failed:
                    failed.append(item.data["seq"])
                    raise RuntimeError("a bug")

            await db.write(lambda store: store.stream_hooks.extend([hold, trip]))
            eff, _ = await _command_during_batch(db, hold)
            assert failed == [trip_seq] and db.midway == 1
            assert _commits_of(commits)[0] == (CHUNK, ["command"])
            assert eff.persisted == EVENTS and eff.duplicates == 0
            per_device = EVENTS // len(DEVICES)
            assert eff.acks == {d: ("e1", per_device) for d in DEVICES}
            n, counters = await db.read(lambda store: (
                len(store.list_events(limit=10_000)), store.counters()))
            assert n == EVENTS
            assert counters["events_persisted"] == EVENTS
            assert counters["messages_received"] == EVENTS + len(DEVICES)
            assert counters.get("duplicates", 0) == 0

    asyncio.run(main())


def test_events_of_an_unknown_device_in_a_cut_batch_are_rejected_once(tmp_path):
    """Rejections are counted in the chunk that holds the message, so a midway commit counts
    them once."""
    commits: list = []

    async def main():
        db = Database(tmp_path / "gw.db", on_commit=commits.append)
        async with db:
            await _setup(db)
            hold = _Hold()
            await db.write(lambda store: store.stream_hooks.append(hold))
            events = _events()
            # one stranger's event in the first chunk, one in the last
            events[5] = evt(1, dev="stranger")
            events[-3] = evt(2, dev="stranger")
            eff, _ = await _command_during_batch(db, hold, events)
            assert db.midway == 1
            assert eff.rejections["unknown-device"] == 2 and eff.rebirths == {"stranger"}
            rejections = await db.read(lambda store: store.rejections())
            assert rejections == {"unknown-device": 2}
            assert eff.persisted == EVENTS - 2

    asyncio.run(main())


def _cut_with(tmp_path, patch):
    """A 600-event batch cut by a command write, with `patch(store)` applied to the writer's
    store first; returns (the batch's outcome, the command's outcome, events stored after, and
    a write made after it all)."""

    async def main():
        db = Database(tmp_path / "gw.db")
        async with db:
            await _setup(db)
            hold = _Hold()
            await db.write(lambda store: (store.stream_hooks.append(hold), patch(store)))
            outcomes = await _command_during_batch(db, hold, return_exceptions=True)
            stored = await db.read(lambda store: (len(store.list_events(limit=10_000)),
                                                  store.stream_after(0, 10_000)))
            after = await db.write_first(_lane, "after")  # the writer is in a clean state
            return outcomes, stored, after

    return asyncio.run(main())


def test_a_cut_whose_commit_fails_fails_the_command_write_and_the_batch(tmp_path):
    def patch(store):
        def boom():
            raise sqlite3.OperationalError("disk I/O error")
        store.commit_midway = boom

    (batch, command), (events, items), after = _cut_with(tmp_path, patch)
    assert isinstance(batch, MidwayCommitError)  # not acked: the device sends it again
    assert isinstance(command, sqlite3.OperationalError)  # the caller hears it failed
    assert events == 0 and not [i for i in items if i.kind == "command"]  # nothing of either
    assert after == "after"


def test_a_cut_that_commits_but_cannot_reopen_tells_the_command_it_is_stored(tmp_path):
    """The command write committed with the first chunk: its caller is answered with success
    (never "failed" for a command that is stored and will be sent); the batch fails, and what
    it had not committed is rolled back."""
    def patch(store):
        def boom():
            raise sqlite3.OperationalError("database is locked")
        store.reopen_midway = boom

    (batch, command), (events, items), after = _cut_with(tmp_path, patch)
    assert command == "command"
    assert isinstance(batch, MidwayCommitError)
    assert events == CHUNK and [i.data["n"] for i in items if i.kind == "command"] == ["command"]
    assert after == "after"


# -- cut anywhere, same result -------------------------------------------------------------

_SEQS = st.lists(st.tuples(st.sampled_from(["pad-1", "pad-2", "stranger", "birth-2"]),
                           st.integers(1, 12)), min_size=1, max_size=40)


def _messages(spec):
    out = []
    for dev, seq in spec:
        if dev == "birth-2":  # a rebirth of pad-2 mid-batch (a flush point of its own)
            out.append(birth(dev="pad-2", session=2, first=1, nxt=100))
        else:
            out.append(evt(seq, dev=dev))
    return out


def _state(store):
    events = [tuple(r) for r in store.conn.execute(
        "SELECT device, epoch, seq, type, body FROM events ORDER BY device, epoch, seq")]
    acks = [tuple(r) for r in store.conn.execute(
        "SELECT device, epoch, upto, verified FROM acks ORDER BY device, epoch")]
    return events, acks, store.counters(), store.rejections()


def _apply(tmp_path, name, batches, cuts):
    """Apply `batches` to a fresh store; `cuts` says, at each chunk boundary in turn, whether
    a command write waits there (the midway commit is then made, as the writer's lane does)."""
    conn = connect(tmp_path / name)
    conn.execute("PRAGMA synchronous = OFF")  # a test of order, not of durability: no fsync
    migrate(conn)
    store = Store(conn)
    apply_batch(store, [birth(dev=d) for d in ("pad-1", "pad-2")], 1)
    asked = iter(cuts)
    made = 0

    def waiting():
        return next(asked, False)

    def join():
        nonlocal made
        made += 1
        with store.transaction():  # a command's write in the lane: a savepoint of its own
            store.append_stream("command", {"n": made})
        store.commit_midway()
        store.reopen_midway()

    store.lane_waiting, store.lane_join = waiting, join
    effects = [apply_batch(store, batch, 2) for batch in batches]
    assert not conn.in_transaction
    state = _state(store)
    conn.close()
    return state, [(e.acks, e.new_epochs, e.persisted, e.duplicates, e.rebirths) for e in effects], \
        made


@settings(max_examples=30, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(batches=st.lists(_SEQS, min_size=1, max_size=3), cuts=st.lists(st.booleans(), max_size=30))
def test_a_batch_cut_anywhere_ends_as_the_same_batch_uncut(tmp_path_factory, monkeypatch,
                                                          batches, cuts):
    """Duplicates, gaps, unknown devices and a rebirth mid-batch, with chunks of 3 events: cut
    at any chunk boundary, a batch stores, acks and counts exactly what it does uncut."""
    monkeypatch.setattr(ingest, "CHUNK", 3)
    tmp = tmp_path_factory.mktemp("cut")
    messages = [_messages(spec) for spec in batches]
    uncut, uncut_effects, _ = _apply(tmp, "uncut.db", messages, [])
    cut, cut_effects, made = _apply(tmp, "cut.db", messages, cuts)
    assert cut == uncut
    assert cut_effects == uncut_effects
    assert made <= len(cuts)

"""The hub's MQTT edge: receive readings and statuses, store them, ack what is committed.

Delivery is at least once end to end and made exactly once here: a batch is inserted idempotently
and acked only after its transaction commits, so an agent deletes from its outbox only readings
that are safely on the hub's disk. A duplicate (the agent resent because an ack was lost) is acked
again, or the agent would resend it forever.

The broker, too, hears of a message only once it is done with (MQTT manual acks on a persistent
session): a hub killed between receiving a batch and committing it gets it again from the broker
when it is back. A group that fails because the database is busy or locked (another process
writing: ``settle``, a maintenance script) is tried again until it commits; meanwhile the broker
holds what follows. Any other failure is logged and counted, and the messages are acked to the
broker all the same, so that one bad message cannot hold the broker's window to the hub shut;
the agents send what the hub did not ack again.

Threads: paho's network thread runs ``on_message``, which only enqueues, so a slow disk never
stalls the MQTT keepalive (unless ``max_queue_bytes`` are already waiting: then it holds that
message until the worker takes its next group, and the broker keeps the rest). One worker thread
drains the queue in groups (up to ``max_group`` messages, or whatever is waiting), decodes them,
writes the whole group in one transaction, commits, then publishes one ack per home. Under load
groups grow, so commits (and their fsyncs) stay few while throughput rises.
"""

from __future__ import annotations

import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any, Final, Literal, TypeVar

import hub
from hub.storage.store import HomeInsert, InsertResult, Store
from protocol.clock import Clock
from protocol.codec import CodecError, HomeMismatchError, decode_stored_message, encode
from protocol.payloads import HomeStatus, HubStatus, ReadingColumns
from protocol.quantities import Role
from protocol.session import SESSION_EXPIRY_S, BrokerSettings, MqttSession
from protocol.topics import HomeTopic, HubTopic, check_id, home_filter, home_topic, hub_topic

log = logging.getLogger(__name__)
_T = TypeVar("_T")

_Message = tuple[str, bytes, Callable[[], None]]  # topic, payload, ack to the broker
QUEUE_WAIT_S: Final = 20.0  # at most, per message, before it is queued over max_queue_bytes
RETRY_FIRST_S: Final = 0.5  # a busy database is tried again after this, doubling ...
RETRY_MAX_S: Final = 5.0  # ... up to this (SQLite's own busy wait, 10 s, comes on top)


class _Abandoned(Exception):
    """Stopping while a group waited for the database: it is left unacked for the broker to
    send again."""


STAT_NAMES: Final = (
    "received",  # messages taken from the broker
    "stored",  # readings newly stored
    "duplicates",  # readings that were already stored (acked again)
    "rejected",  # messages refused: not v1, malformed, home differs from topic, ...
    "rejected_readings",  # readings refused inside good batches: role differs from registered
    "statuses",  # home status messages recorded
    "acks_sent",  # ack messages published
    "errors",  # groups the store failed to write (not acked; agents resend)
    "busy",  # tries that found the database busy or locked (tried again)
    "dropped",  # messages that arrived while stopping (not acked; agents resend)
    "withheld",  # readings of streams the household no longer shares: acked, not stored
    "awaiting_consent",  # readings under a grant not yet received: not acked, sent again
    "lost_at_homes",  # readings homes report they could not keep (outbox over its budget)
    "compacted_at_homes",  # raw readings homes merged into aggregates to stay in budget
    "mismatched",  # of the rejected: payload home differs from the topic's (fault or forgery)
)


# May a reading of (home, role, grant id) be stored now, withheld (acked, not stored) or must it
# wait for its grant (neither)?
Admit = Callable[[str, Role, str], Literal["store", "withhold", "wait"]]


class Ingest:
    """Subscribe to every home's readings and status of ``coop``; store and ack.

    ``clock`` stamps ``received_ms`` on stored readings and the hub's status messages. A group
    (one transaction, one ack per home) is at most ``max_group`` messages or about
    ``max_group_bytes`` of payload (8 MiB is some 30,000 readings), whichever comes first, or
    what arrived within ``linger_s`` of the group's first message; at most ``max_queue_bytes``
    of payload wait behind it (the broker keeps the rest).

    Scale-out: with ``shared_group`` the readings come through the MQTT 5 shared subscription
    ``$share/{shared_group}/coopwatt/{coop}/homes/+/readings``, so the broker hands each batch to
    one of several ingest processes sharing the database (the idempotent insert makes a batch
    that reaches two of them harmless, and each acks what it committed on the home's own ack
    topic). Exactly one of them is the ``primary``: it alone publishes ``hub/status`` (and its
    last will) and records home statuses; the others only store and ack readings (and follow
    what a route, such as consent, needs).

    ``admit`` (the consent book's, see :mod:`hub.consent`) says whether a reading of (home, role,
    grant id) may be stored now; without it every reading is stored.
    """

    def __init__(
        self,
        store: Store,
        settings: BrokerSettings,
        coop: str,
        clock: Clock,
        *,
        max_group: int = 500,
        max_group_bytes: int = 8 * 1024 * 1024,
        max_queue_bytes: int = 64 * 1024 * 1024,
        linger_s: float = 0.05,
        shared_group: str | None = None,
        primary: bool = True,
        admit: Admit | None = None,
    ) -> None:
        check_id(coop, "coop")
        if shared_group is not None:
            check_id(shared_group, "shared_group")
        elif not primary:
            raise ValueError("an ingest worker that is not the primary needs a shared_group")
        if store.coop != coop:
            raise ValueError(f"store is the database of {store.coop!r}, not {coop!r}")
        if max_group < 1:
            raise ValueError("max_group must be at least 1")
        self.store = store
        self.coop = coop
        self.clock = clock
        self.max_group = max_group
        self.max_group_bytes = max_group_bytes
        self.max_queue_bytes = max_queue_bytes
        self.linger_s = linger_s
        self._queued_bytes = 0  # payload waiting in the queue
        self._status_topic = hub_topic(coop, HubTopic.STATUS)
        self.primary = primary
        readings = home_filter(coop, HomeTopic.READINGS)
        plain = readings
        if shared_group is not None:
            readings = f"$share/{shared_group}/{readings}"
        self._unsubscribe = _stale_filters(store, settings.client_id, readings, plain)
        self._filters: tuple[str, ...] = (
            (readings, home_filter(coop, HomeTopic.STATUS)) if primary else (readings,)
        )
        self._routes: dict[HomeTopic, Callable[[str, Any], None]] = {}
        self.admit = admit
        # None asks the worker to stop once the queue is drained.
        self._queue: queue.SimpleQueue[_Message | None] = queue.SimpleQueue()
        self._cond = threading.Condition()
        self._stats = dict.fromkeys(STAT_NAMES, 0)
        self._pending = 0  # messages enqueued and not yet fully processed
        self._outbox_losses: dict[str, tuple[int, int]] = {}  # home -> (lost, compacted)
        self._mismatched_homes: dict[str, int] = {}  # topic home -> payloads naming another
        self._closing = False
        self._worker: threading.Thread | None = None
        self.session = MqttSession(
            settings,
            on_delivery=self._on_message,
            on_connect=self._on_connect,
            will=(self._status_topic, encode(HubStatus(coop=coop, state="offline")))
            if primary
            else None,
            # An extra worker keeps no session: Mosquitto goes on handing an absent member of a
            # shared group its share of readings, to sit unacked until it came back.
            session_expiry_s=SESSION_EXPIRY_S if primary else 0,
        )

    def route(self, kind: HomeTopic, handler: Callable[[str, Any], None]) -> None:
        """Hand every decoded ``kind`` message to ``handler(home, payload)``.

        Other hub modules (consent, prompts) use the hub's one connection this way. Handlers run
        on the worker thread, in arrival order, after the group's readings are committed; one
        that raises is logged and counted, and the worker lives on. Call before :meth:`start`.
        """
        self._routes[kind] = handler
        # Subscribed before readings: a retained grant then reaches the hub before the readings
        # released under it, which would otherwise wait for a resend.
        self._filters = (home_filter(self.coop, kind), *self._filters)

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Start the worker and connect in the background; returns at once."""
        if self._worker is not None:
            raise RuntimeError("ingest already started")
        self._worker = threading.Thread(target=self._run, name=f"ingest-{self.coop}", daemon=True)
        self._worker.start()
        self.session.start()
        log.info("ingest starting coop=%s broker=%s", self.coop, self.session.settings.url)

    def stop(self, timeout_s: float = 10.0) -> None:
        """Drain what is queued (store, commit, ack), publish ``offline``, disconnect.

        Messages arriving once stopping has begun are not stored nor acked; their agents resend.
        """
        with self._cond:
            if self._closing:
                return
            self._closing = True
        worker = self._worker
        if worker is not None:
            self._queue.put(None)
            worker.join(timeout_s)
            if worker.is_alive():
                log.warning("ingest worker still busy after %.1f s; stopping anyway", timeout_s)
        final = (self._status_topic, encode(self._hub_status("offline"))) if self.primary else None
        self.session.stop(final=final)
        log.info("ingest stopped coop=%s %s", self.coop, _format_stats(self.stats()))

    @property
    def connected(self) -> threading.Event:
        """Set while connected to the broker."""
        return self.session.connected

    # -- observation -----------------------------------------------------------------------

    def stats(self) -> dict[str, int]:
        """Counters since start (see ``STAT_NAMES``) plus ``pending``: messages not yet done."""
        with self._cond:
            return {**self._stats, "pending": self._pending}

    def mismatched_homes(self) -> dict[str, int]:
        """Per topic home, payloads refused because they named another home (monitoring)."""
        with self._cond:
            return dict(self._mismatched_homes)

    def alive(self) -> bool:
        """The worker is running (what the hub's watchdog ping vouches for)."""
        return self._worker is not None and self._worker.is_alive() and not self._closing

    def wait_until(self, predicate: Callable[[dict[str, int]], bool], timeout_s: float) -> bool:
        """Block until ``predicate(stats())`` holds or ``timeout_s`` passes; True if it held.

        Woken by every processed group, so this is for tests and demos, not a sleep.
        """
        with self._cond:
            return self._cond.wait_for(
                lambda: predicate({**self._stats, "pending": self._pending}), timeout_s
            )

    def wait_idle(self, timeout_s: float) -> bool:
        """Block until every message received so far is stored and acked (or rejected)."""
        return self.wait_until(lambda s: s["pending"] == 0, timeout_s)

    # -- paho's thread ---------------------------------------------------------------------

    def _on_connect(self) -> None:
        # Runs on every (re)connection: subscriptions and retained state survive reconnects.
        for topic_filter in self._unsubscribe:
            self.session.client.unsubscribe(topic_filter)
        for topic_filter in self._filters:
            self.session.subscribe(topic_filter, qos=1)
        if self.primary:
            self.session.publish(
                self._status_topic, encode(self._hub_status("online")), qos=1, retain=True
            )

    def _on_message(self, topic: str, payload: bytes, ack: Callable[[], None]) -> None:
        # Runs on paho's network thread, which also keeps the connection alive: it waits only
        # while max_queue_bytes of payload are already waiting, until the worker takes its
        # next group. Meanwhile this message is not acknowledged to the broker, which keeps
        # the rest (its in-flight window to the hub is full), so the hub's memory stays bounded
        # however large a backlog the homes bring back after an outage.
        with self._cond:
            self._cond.wait_for(
                lambda: self._closing or self._queued_bytes < self.max_queue_bytes,
                QUEUE_WAIT_S,
            )
            if self._closing:
                self._stats["dropped"] += 1
                return
            self._pending += 1
            self._queued_bytes += len(payload)
            self._queue.put((topic, payload, ack))
            self._cond.notify_all()

    # -- the worker ------------------------------------------------------------------------

    def _run(self) -> None:
        stopping = False
        while not (stopping and self._queue.empty()):
            group: list[_Message] = []
            size = 0
            # Block for the first message, then take what is waiting, up to max_group messages
            # or max_group_bytes of payload (memory stays bounded on a Pi under a backlog), and
            # what arrives within linger_s: homes polling every few seconds each send a small
            # message, and one commit (one fsync) for each would cost more than the rest.
            block = not stopping
            deadline: float | None = None
            while len(group) < self.max_group and size < self.max_group_bytes:
                timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
                try:
                    item = self._queue.get(block=block, timeout=timeout)
                except queue.Empty:
                    break
                if item is None:  # stop requested: finish what is queued, then return
                    stopping, block = True, False
                    continue
                if deadline is None:
                    deadline = time.monotonic() + self.linger_s
                group.append(item)
                size += len(item[1])
                # A full queue takes nothing more until this group is closed: lingering for a
                # message that cannot come would only stall paho's thread, a message at a time.
                block = (
                    not stopping
                    and time.monotonic() < deadline
                    and self._queued_bytes < self.max_queue_bytes
                )
            if not group:
                continue
            with self._cond:
                self._queued_bytes -= size
                self._cond.notify_all()
            try:
                self._process(group)
            except _Abandoned:
                log.info("stopping: %d message(s) left for the broker to send again", len(group))
                continue
            except Exception:
                log.exception("ingest worker failed on a group of %d message(s)", len(group))
                self._bump(errors=1)
            finally:
                with self._cond:
                    self._pending -= len(group)
                    self._cond.notify_all()
            for _, _, ack in group:
                ack()

    def _retrying(self, what: str, work: Callable[[], _T]) -> _T:
        """``work()``, tried again while the database is busy or locked (or its disk is full or
        failing: nothing can be stored until that passes either). Raises :class:`_Abandoned`
        when the hub stops meanwhile."""
        wait_s = RETRY_FIRST_S
        while True:
            try:
                return work()
            except sqlite3.OperationalError as exc:
                self._bump(busy=1)
                if wait_s == RETRY_FIRST_S:
                    log.warning("cannot write %s (%s); trying again until it goes", what, exc)
            with self._cond:
                if self._cond.wait_for(lambda: self._closing, wait_s):
                    raise _Abandoned
            wait_s = min(wait_s * 2, RETRY_MAX_S)

    def _process(self, group: list[_Message]) -> None:
        batches: list[tuple[str, ReadingColumns]] = []
        statuses: list[HomeStatus] = []
        routed: list[tuple[HomeTopic, str, Any]] = []
        rejected = 0
        mismatched: list[str] = []
        for topic, payload, _ in group:
            try:
                address, decoded = decode_stored_message(topic, payload)
            except CodecError as exc:
                rejected += 1
                if isinstance(exc, HomeMismatchError):
                    mismatched.append(exc.topic_home)
                log.warning("rejected message on %r: %s", topic, exc)
                continue
            if address.coop != self.coop or address.home is None:
                rejected += 1
                log.warning("rejected message on %r: not a home topic of %s", topic, self.coop)
            elif isinstance(decoded, ReadingColumns):
                batches.append((address.home, decoded))
            elif isinstance(decoded, HomeStatus):
                statuses.append(decoded)
            elif isinstance(address.kind, HomeTopic) and address.kind in self._routes:
                routed.append((address.kind, address.home, decoded))
            else:
                rejected += 1
                log.warning("rejected message on %r: the hub does not take %s", topic, address.kind)
        if mismatched:
            with self._cond:
                for home in mismatched:
                    self._mismatched_homes[home] = self._mismatched_homes.get(home, 0) + 1
        self._bump(received=len(group), rejected=rejected, mismatched=len(mismatched))

        self._note_outbox_losses(statuses)
        # Routed messages first: a consent change decides what of this group may be stored.
        for kind, home, decoded in routed:
            handler = self._routes[kind]
            try:
                self._retrying(f"the {kind.value} of {home}", lambda: handler(home, decoded))  # noqa: B023
            except _Abandoned:
                raise
            except Exception:
                log.exception("handling %s of home=%s failed", kind.value, home)
                self._bump(errors=1)
        now_ms = self.clock.now_ms()
        if statuses:
            try:
                self._retrying(
                    "home statuses", lambda: self.store.update_home_statuses(statuses, now_ms)
                )
                self._bump(statuses=len(statuses))
            except _Abandoned:
                raise
            except Exception:
                log.exception("could not record %d home status(es)", len(statuses))
                self._bump(errors=1)
        if not batches:
            return
        withheld: dict[str, dict[str, list[int]]] = {}
        if self.admit is not None:
            batches = self._screen(batches, withheld)
        try:
            result = self._retrying(
                f"{len(batches)} reading batch(es)",
                lambda: self.store.insert_batches(batches, now_ms),
            )
        except _Abandoned:
            raise
        except Exception:
            # Nothing was committed, so nothing is acked to the homes; the agents resend.
            log.exception("could not store %d reading batch(es); not acked", len(batches))
            self._bump(errors=1)
            return
        self._bump(
            stored=result.new,
            duplicates=result.duplicates,
            rejected_readings=result.rejected,
        )
        for home, devices in withheld.items():
            committed = result.homes.setdefault(home, HomeInsert()).committed
            for device, seqs in devices.items():
                committed[device] = sorted({*committed.get(device, []), *seqs})
        self._send_acks(result)
        log.debug(
            "group messages=%d batches=%d new=%d duplicates=%d",
            len(group),
            len(batches),
            result.new,
            result.duplicates,
        )

    def _screen(
        self, batches: list[tuple[str, ReadingColumns]], withheld: dict[str, dict[str, list[int]]]
    ) -> list[tuple[str, ReadingColumns]]:
        """Keep what the home's consent lets the hub store. A reading of a stream the household
        has since withdrawn is acked but not stored; one released under a grant the hub has not
        seen yet is neither, so the agent sends it again once the grant has arrived."""
        assert self.admit is not None
        kept: list[tuple[str, ReadingColumns]] = []
        waiting = dropped = 0
        verdicts: dict[tuple[str, Role, str], str] = {}  # a batch has a few streams and grants
        for home, batch in batches:
            # One verdict per stream and grant, in the order they first appear (a batch holds
            # a few, for hundreds of readings); a batch that may be stored whole, as almost all
            # are, is kept as it is.
            grants = dict.fromkeys(batch.grants)
            if len(grants) == 1:  # the norm: the batch's streams are its roles
                streams = [(role, grant) for role in dict.fromkeys(batch.roles) for grant in grants]
            else:
                streams = list(dict.fromkeys(zip(batch.roles, batch.grants, strict=True)))
            for role, grant in streams:
                if (home, role, grant) not in verdicts:
                    verdicts[(home, role, grant)] = self.admit(home, role, grant)
            if all(verdicts[(home, role, grant)] == "store" for role, grant in streams):
                kept.append((home, batch))
                continue
            keep: list[bool] = []
            for device, role, seq, grant in zip(
                batch.devices, batch.roles, batch.seqs, batch.grants, strict=True
            ):
                verdict = verdicts[(home, role, grant)]
                keep.append(verdict == "store")
                if verdict == "withhold":
                    withheld.setdefault(home, {}).setdefault(device, []).append(seq)
                    dropped += 1
                elif verdict != "store":
                    waiting += 1
            if any(keep):
                kept.append((home, batch.select(keep)))
        if waiting or dropped:
            self._bump(withheld=dropped, awaiting_consent=waiting)
        return kept

    def _send_acks(self, result: InsertResult) -> None:
        sent = 0
        for ack in result.acks():
            try:
                data = encode(ack)
            except CodecError as exc:
                log.error("cannot encode the ack for home=%s: %s", ack.home, exc)
                continue
            # Published even while disconnected: paho queues QoS 1 messages for the reconnect,
            # and if an ack is lost anyway the agent resends and gets a duplicate's ack.
            self.session.publish(home_topic(self.coop, ack.home, HomeTopic.ACK), data, qos=1)
            sent += 1
        self._bump(acks_sent=sent)

    # -- helpers ---------------------------------------------------------------------------

    def _note_outbox_losses(self, statuses: list[HomeStatus]) -> None:
        """A home that had to compact or drop readings says so in its status: never silent."""
        for s in statuses:
            if s.lost is None and s.compacted is None:
                continue  # a last will says nothing about the outbox
            lost, compacted = s.lost or 0, s.compacted or 0
            old_lost, old_compacted = self._outbox_losses.get(s.home, (0, 0))
            if lost > old_lost:
                log.warning("home=%s lost %d readings: its outbox was over budget", s.home,
                            lost - old_lost)  # fmt: skip
            if compacted > old_compacted:
                log.info("home=%s merged %d raw readings into 15-minute aggregates", s.home,
                         compacted - old_compacted)  # fmt: skip
            self._outbox_losses[s.home] = (lost, compacted)
        totals = [sum(v) for v in zip(*self._outbox_losses.values(), strict=True)]
        if totals:
            with self._cond:
                self._stats["lost_at_homes"], self._stats["compacted_at_homes"] = totals

    def _bump(self, **counts: int) -> None:
        with self._cond:
            for name, n in counts.items():
                self._stats[name] += n
            self._cond.notify_all()

    def _hub_status(self, state: Literal["online", "offline"]) -> HubStatus:
        with self._cond:
            stats = dict(self._stats)
        status = HubStatus(coop=self.coop, state=state, version=hub.__version__, stats=stats)
        try:
            return replace(status, ts_ms=self.clock.now_ms())
        except ValueError:  # a clock outside 2000..2100 (a test's clock at 0): leave ts out
            return status


def _stale_filters(store: Store, client_id: str, readings: str, plain: str) -> tuple[str, ...]:
    """Readings filters this client id subscribed to before and must drop now.

    A persistent session keeps its subscriptions across restarts: a hub that joins a shared
    group, leaves one or changes it would otherwise get every batch through both. The filter
    each client id uses is remembered in the database's ``meta`` table.
    """
    key = f"readings_filter:{client_id}"
    row = store.reader().execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    stale = {plain, str(row[0])} if row is not None else {plain}
    if row is None or row[0] != readings:
        with store.transaction() as conn:
            conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, readings))
    return tuple(sorted(stale - {readings}))


def _format_stats(stats: dict[str, int]) -> str:
    return " ".join(f"{k}={v}" for k, v in stats.items())

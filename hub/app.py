"""One hub process, built and wired in one place.

:class:`Hub` builds the primary hub's parts over an open store and hands each its collaborators:
ingest with consent on its path, the appliance prompts, the forecast (when the config has a
``[site]``) and the operator's health metrics and alerts. :func:`serve` opens the store, runs a
:class:`Hub` (or an extra ingest worker) until it is told to stop, and enforces retention
hourly. ``coopwatt-hub run`` (:mod:`hub.cli.run`) calls it under signal handling; benchmarks
call it as they are.

:func:`ingest_with_consent` is ingest and consent alone, wired the same way, for an extra ingest
worker, the simulated neighbourhood (:mod:`sim.demo`) and tests.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace

import hub
from hub.config import ConfigError, HubConfig
from hub.consent.book import ConsentBook, PurposeView
from hub.consent.service import attach as attach_consent
from hub.forecast.service import ForecastService
from hub.ingest.service import Ingest
from hub.ops.community import community_metrics
from hub.ops.health import HealthService
from hub.prompts.service import PromptsService
from hub.storage.store import Store
from protocol.clock import Clock, SystemClock
from protocol.consent import Purpose
from protocol.session import BrokerSettings
from protocol.systemd import Notifier

log = logging.getLogger("hub")

RETENTION_EVERY_MS = 3_600_000  # retention is enforced hourly (of the hub's clock)


def ingest_with_consent(
    store: Store,
    broker: BrokerSettings,
    coop: str,
    clock: Clock,
    *,
    shared_group: str | None = None,
    primary: bool = True,
) -> tuple[Ingest, ConsentBook]:
    """Ingest with consent on its path, not started: the homes' grants are recorded in the
    returned book, only what a home's current grant shares is stored, and the ``primary``
    answers each grant with receipts. See :class:`~hub.ingest.service.Ingest` for
    ``shared_group`` and ``primary``.
    """
    book = ConsentBook(store)
    ingest = Ingest(
        store, broker, coop, clock, shared_group=shared_group, primary=primary, admit=book.admit
    )
    attach_consent(ingest, book)
    return ingest, book


def serve(
    config: HubConfig,
    stop: threading.Event,
    *,
    clock: Clock | None = None,
    notifier: Notifier | None = None,
    worker: int | None = None,
) -> dict[str, int]:
    """Open the store, run ingest until ``stop`` is set, then stop cleanly; returns the stats.

    Also publishes the operator's metrics and alerts (:mod:`hub.ops.health`), tells systemd when it
    is ready and feeds its watchdog while the ingest worker lives. Raises
    :class:`~hub.storage.store.StoreError` when the database cannot be used.

    ``worker`` N runs an extra ingest worker instead (``config.shared_group`` must be set): it
    stores and acks the readings the broker's shared subscription hands it, and follows consent.
    """
    notifier = notifier or Notifier()
    clock = clock or SystemClock()
    if worker is not None:
        return _serve_worker(config, stop, worker, clock, notifier)
    store = Store.open(config.db_path, config.coop, clock=clock)
    try:
        log.info(
            "hub starting version=%s coop=%s db=%s broker=%s client_id=%s protocol=%s "
            "shared_group=%s",
            hub.__version__,
            config.coop,
            config.db_path,
            config.broker.url,
            config.broker.client_id,
            config.broker.protocol,
            config.shared_group,
        )
        parts = Hub.build(config, store, clock)
        parts.start()
        notifier.ready(f"ingesting for {config.coop}")
        try:
            next_retention = clock.now_ms()
            while not stop.wait(1.0):
                if parts.ingest.alive():  # a dead worker stops the pings: systemd restarts the hub
                    notifier.ping()
                parts.health.tick()
                if clock.now_ms() >= next_retention:
                    next_retention = clock.now_ms() + _enforce_retention(parts.book, clock.now_ms())
        finally:
            parts.stop()
        return parts.ingest.stats()
    finally:
        store.close()


@dataclass(frozen=True)
class Hub:
    """The primary hub's parts over one open store, each given its collaborators when it is
    built (:meth:`build`), none changed afterwards.

    - ``ingest`` stores and acks readings, screened by ``book`` (consent), and routes the homes'
      grants to it and their appliances and feedback to ``prompts``;
    - ``prompts`` plans appliance runs on each forecast, on a connection of its own;
    - ``forecast`` (None without a ``[site]``) publishes through ingest's connection and reads
      through ``book``, which ingest keeps current;
    - ``health`` publishes the operator's metrics and alerts from ingest's counters and the
      community figures (read for the ``community-stats`` purpose), on a connection of its own.
    """

    ingest: Ingest
    book: ConsentBook
    prompts: PromptsService
    forecast: ForecastService | None
    health: HealthService

    @classmethod
    def build(cls, config: HubConfig, store: Store, clock: Clock) -> Hub:
        """Build and wire every part; nothing is started and nothing connects yet."""
        ingest, book = ingest_with_consent(
            store, config.broker, config.coop, clock, shared_group=config.shared_group
        )
        # Appliance-timing prompts: appliances and feedback come through ingest's routes.
        prompts = PromptsService(store, book, config.coop, clock)
        prompts.attach(ingest, config.broker)
        forecast = _forecast_service(config, store, clock, ingest, book)
        figures = PurposeView(store, book, Purpose.COMMUNITY_STATS)
        health = HealthService(
            config.db_path, config.coop, config.broker, clock, ingest.stats,
            ingest.mismatched_homes,
            community=_at_most_every(
                COMMUNITY_EVERY_MS, lambda now_ms: community_metrics(figures, now_ms)
            ),
        )  # fmt: skip
        return cls(ingest, book, prompts, forecast, health)

    def start(self) -> None:
        self.ingest.start()
        self.prompts.start()
        if self.forecast is not None:
            self.forecast.start()
        self.health.start()

    def stop(self) -> None:
        if self.forecast is not None:
            self.forecast.stop()
        self.health.stop()
        self.ingest.stop()
        self.prompts.stop()


RETENTION_RETRY_MS = 60_000


def _enforce_retention(book: ConsentBook, now_ms: int) -> int:
    """Erase what no grant keeps any longer; returns ms until the next time. Another process
    writing the database (a long ``settle``, a maintenance script) only postpones it: the hub
    goes on ingesting."""
    try:
        book.enforce_retention(now_ms)
    except sqlite3.OperationalError as exc:
        log.warning("retention postponed for a minute: %s", exc)
        return RETENTION_RETRY_MS
    return RETENTION_EVERY_MS


# The community figures cover the last hour, read from every home's raw readings: some two
# million readings at 2,000 homes, seconds of CPU. Every health tick (30 s) that would be a
# tenth of a core; every 5 minutes it is a hundredth, and an hour's totals hardly change.
COMMUNITY_EVERY_MS = 300_000


def _at_most_every(
    every_ms: int, compute: Callable[[int], dict[str, float]]
) -> Callable[[int], dict[str, float]]:
    """``compute(now_ms)``, recomputed only once ``every_ms`` of the hub's clock have passed."""
    last: list[tuple[int, dict[str, float]]] = []

    def cached(now_ms: int) -> dict[str, float]:
        if not last or now_ms - last[0][0] >= every_ms or now_ms < last[0][0]:
            last[:] = [(now_ms, compute(now_ms))]
        return last[0][1]

    return cached


def _forecast_service(
    config: HubConfig, store: Store, clock: Clock, ingest: Ingest, book: ConsentBook
) -> ForecastService | None:
    """The forecast beside ingest when the config has a ``[site]``: it publishes through
    ingest's connection and reads through the consent book that ingest keeps current."""
    site = config.site
    if site is None:
        log.info("forecast off: the config has no [site] table (latitude, longitude)")
        return None
    log.info(
        "forecast on: lat=%s lon=%s timezone=%s pv_capacity_w=%s wind_capacity_w=%s "
        "holidays=%d half_holidays=%d",
        site.lat,
        site.lon,
        site.timezone or "mean-solar",
        site.pv_capacity_w or "estimated",
        site.wind_capacity_w or "estimated",
        len(site.holidays),
        len(site.half_holidays),
    )
    return ForecastService(store, config.coop, site, clock, ingest.session.publish, book=book)


def _serve_worker(
    config: HubConfig, stop: threading.Event, worker: int, clock: Clock, notifier: Notifier
) -> dict[str, int]:
    """An extra ingest worker: readings from the shared subscription, consent followed."""
    if config.shared_group is None:
        raise ConfigError("--worker needs broker.shared_group in the config")
    settings = replace(config.broker, client_id=f"{config.broker.client_id}-w{worker}")
    store = Store.open(config.db_path, config.coop, clock=clock)
    try:
        # It follows consent; the primary alone answers the homes with receipts.
        ingest, _ = ingest_with_consent(
            store, settings, config.coop, clock, shared_group=config.shared_group, primary=False
        )
        log.info(
            "ingest worker %d starting version=%s coop=%s db=%s broker=%s client_id=%s "
            "shared_group=%s",
            worker,
            hub.__version__,
            config.coop,
            config.db_path,
            settings.url,
            settings.client_id,
            config.shared_group,
        )
        ingest.start()
        notifier.ready(f"ingest worker {worker} for {config.coop}")
        try:
            while not stop.wait(1.0):
                if ingest.alive():
                    notifier.ping()
        finally:
            ingest.stop()
        return ingest.stats()
    finally:
        store.close()

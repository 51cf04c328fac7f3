"""Consent on ingest's path: grants arriving from the homes are recorded in the book and
answered with receipts, and only what a home's current grant shares is stored.

The book's :meth:`~hub.consent.book.ConsentBook.admit` is handed to
:class:`~hub.ingest.service.Ingest` when it is built (:mod:`hub.app` does both);
:func:`attach` routes the homes' grants to a :class:`ConsentService`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable

from hub.consent.book import ConsentBook
from hub.ingest.service import Ingest
from protocol.codec import encode
from protocol.consent import ConsentGrant
from protocol.payloads import Receipt
from protocol.topics import HomeTopic, home_topic

log = logging.getLogger(__name__)


class ConsentService:
    """Connects the book to ingest: records grants as they arrive and answers with receipts."""

    def __init__(
        self,
        book: ConsentBook,
        publish_receipt: Callable[[str, bytes], object],
        now_ms: Callable[[], int],
    ) -> None:
        self.book = book
        self.publish_receipt = publish_receipt
        self.now_ms = now_ms

    def on_grant(self, home: str, grant: ConsentGrant) -> None:
        now = self.now_ms()
        outcome = self.book.record(grant, now)
        if outcome.reason is not None:
            log.warning("home=%s consent version %d refused: %s", home, grant.version,
                        outcome.reason)  # fmt: skip
            self._send(Receipt(home, "consent-refused", now, grant.version, reason=outcome.reason))
            return
        if not outcome.recorded:
            return
        log.info("home=%s consent version %d recorded", home, grant.version)
        self._send(Receipt(home, "consent-recorded", now, grant.version))
        if outcome.erased:
            log.info("home=%s erased %s", home, json.dumps(outcome.erased))
            self._send(Receipt(home, "data-erased", now, grant.version, erased=outcome.erased))

    def _send(self, receipt: Receipt) -> None:
        self.publish_receipt(receipt.home, encode(receipt))


def attach(ingest: Ingest, book: ConsentBook) -> ConsentService:
    """Route the homes' grants from ``ingest`` to ``book``; call before ``ingest.start()``.
    ``ingest`` must have been built with ``admit=book.admit``, so that only what a home's current
    grant shares is stored.

    The primary ingest answers each grant with receipts. An extra ingest worker on a shared
    subscription (not ``ingest.primary``) follows every grant (and erases what one withdraws)
    while the primary hub alone answers the home.
    """
    if ingest.admit != book.admit:
        raise ValueError("ingest must be built with admit=book.admit")

    def publish(home: str, data: bytes) -> object:
        if not ingest.primary:
            return None
        return ingest.session.publish(home_topic(ingest.coop, home, HomeTopic.RECEIPTS), data)

    service = ConsentService(book, publish, ingest.clock.now_ms)
    ingest.route(HomeTopic.CONSENT, service.on_grant)
    return service

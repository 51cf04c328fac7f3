"""Ingest: the hub's MQTT edge. Readings and statuses arrive from the homes, are stored exactly
once and acked only after their transaction commits; the broker, too, hears of a message only
once it is stored.

Modules:

- :mod:`.service`: :class:`~hub.ingest.service.Ingest`: subscribe, group, screen by consent
  (the ``admit`` it is built with), store, ack; routes for the other topics homes publish
  (consent, appliances, feedback); the hub's status and its last will.

Consent is wired in by :func:`hub.app.ingest_with_consent`: ingest itself knows only the
``admit`` callable, never the consent book.
"""

"""The cooperative hub: MQTT ingest, the per-cooperative SQLite store, export and summaries.

Library first: :mod:`hub.store`, :mod:`hub.ingest`, :mod:`hub.export` and :mod:`hub.summary` are
usable from Python; :mod:`hub.cli` (``coopwatt-hub``) is a thin shell over them. The hub imports
:mod:`protocol` only; it meets the household agent on the wire, never in code.
"""

from protocol import __version__

__all__ = ["__version__"]

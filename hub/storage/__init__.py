"""Storage: the cooperative's SQLite database, one file per cooperative, and who may write it when.

Readings are stored exactly once (an idempotent insert on ``(device_id, seq)``), times are UTC
epoch milliseconds and quantities are stored in glossary units, one column each. Every other
package reads and writes through a :class:`~hub.storage.store.Store`: its ``reader()`` (one
connection per thread, WAL snapshots) and ``transaction()`` (the one writer connection, under its
lock).

Modules:

- :mod:`.migrations`: the ordered schema migrations, each applied once in its own transaction;
- :mod:`.writer_turn`: turns at writing the database, handed between ingest processes at once;
- :mod:`.store`: :class:`~hub.storage.store.Store`: open (create, migrate or check), insert
  reading batches and home statuses, read readings, counters and statuses back, and keep the
  forecast's weather and community series.
"""

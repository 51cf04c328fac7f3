"""Storage: the cooperative's SQLite database, one file per cooperative, and who may write it when.

Readings are stored exactly once (an idempotent insert on ``(device_id, seq)``), times are UTC
epoch milliseconds and quantities are stored in glossary units, one column each. Every other
package reads and writes through a :class:`~hub.storage.store.Store`: its ``reader()`` (one
connection per thread, WAL snapshots) and ``transaction()`` (the one writer connection, under its
lock and in its writer turn). The one exception is the operator's health service
(:mod:`hub.ops.health`), which reads home statuses and the newest readings' times through a
read-only connection of its own.

Modules:

- :mod:`.migrations`: the ordered schema migrations, each applied once in its own transaction;
- :mod:`.writer_turn`: turns at writing the database, handed between the processes sharing it at
  once (ingest's inserts and every ``transaction()``);
- :mod:`.store`: :class:`~hub.storage.store.Store`: open (create, migrate or check), insert
  reading batches and home statuses, read readings, counters, devices and statuses back.

The tables of a feature are read and written by that feature's package through the store's
``reader()`` and ``transaction()``: consent's ledger in :mod:`hub.consent`, the forecast's weather
and community series in :mod:`hub.forecast.series`, the prompts' tables in
:mod:`hub.prompts.service`, the settlement ledger and statements in :mod:`hub.settlement`.
"""

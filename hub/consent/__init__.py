"""Consent at the hub: each home's grants, what may be stored, what each purpose may read.

The hub keeps every grant version a home publishes in an append-only ledger and checks each
against the one before. It stores a reading only when the home's current grant still shares that
stream; every feature reads stored member data only for its purpose: through a
:class:`~hub.consent.book.PurposeView` (the prompts, the community figures), or in the forecast's
and settlement's own per-purpose reads, which ask the book what each home's current grant covers.
When a grant shrinks, what is no longer covered is erased at once and the home is sent a
receipt.

Modules:

- :mod:`.book`: :class:`~hub.consent.book.ConsentBook` (the ledger, each home's current grant,
  ``admit``, erasure and retention) and :class:`~hub.consent.book.PurposeView` (stored readings
  as one purpose may see them: granted homes and streams, its retention, its resolution);
- :mod:`.service`: the homes' grants routed from ingest to the book, answered with receipts.
"""

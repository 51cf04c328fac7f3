"""Settlement: what neighbours owe each other for the energy they share.

Per 15-minute interval, each member's grid-meter import and export (from its lifetime counters,
interpolated at the interval boundaries) make the community's internal demand and supply; the
energy matched inside the community is priced by the cooperative's mechanism (SDR, MMR or bill
sharing) between the grid's export and import tariffs, and the rest is traded with the grid.
Matched energy is split pro rata to consumption, or by the allocation key the scheme names (the
regulator's fixed shares, rounds, priority groups, caps), optionally at a community price.
Each settled day becomes one balanced transaction in a double-entry ledger in the hub database;
a closed month is immutable and later corrections are adjustments in the next open month.

Modules, pure core first:

- :mod:`.allocation`: allocation keys as data: who gets how much of the shared production;
- :mod:`.scheme`: the cooperative's scheme (mechanism, tariffs, key, time zone, currency), TOML;
- :mod:`.intervals`: counter samples -> per-interval energy per member, with gap flags;
- :mod:`.pricing`: one interval's matching and prices (SDR, MMR, bill sharing);
- :mod:`.source`: THE reads of meter data, each by consent purpose;
- :mod:`.price_store`: imported grid prices in the hub database, ``prices_at``;
- :mod:`.ledger`: the double-entry ledger tables (energy in mWh, money in micro-units);
- :mod:`.engine`: settle a range of days: read, price, post;
- :mod:`.statements`: a member's monthly statement, its formats and its publication;
- :mod:`.metrics` and :mod:`.report`: community figures, charts and the HTML summary.
- :mod:`.reconcile`: the grid operator's per-interval figures, read and set beside the hub's.

Units: energy in integer milliwatt-hours (``_mwh``) inside, watt-hours on statements; money as
:class:`decimal.Decimal` while computing, integer micro-units (10^-6 of the currency,
``_micro``) in the ledger and integer minor units (``_minor``, cents) on statements. No floats
ever hold money.
"""

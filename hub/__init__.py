"""The cooperative hub: stores the homes' readings exactly once, follows their consent, forecasts
the neighbourhood, plans appliance prompts and settles what neighbours share.

Of coopwatt's other packages the hub imports :mod:`protocol` (and the training code in
:mod:`models`, lazily, for ``coopwatt-hub train`` alone); it meets the household agent on the
wire, never in code.
Library first: every command of ``coopwatt-hub`` (:mod:`hub.cli`) is a thin shell over these
packages, each of which maps its own modules in its docstring:

- :mod:`hub.app`: builds one hub process and wires its parts together; ``serve()``;
- :mod:`hub.config`: the hub's TOML config (no numpy, so the operator's tools run without it);
- :mod:`hub.storage`: the cooperative's SQLite database: readings, migrations, writer turns;
- :mod:`hub.ingest`: the MQTT edge: receive readings and statuses, store them, ack them;
- :mod:`hub.consent`: each home's grants, what may be stored, what each purpose may read;
- :mod:`hub.forecast`: weather, features and the ONNX model: demand, PV and wind for 48 hours;
- :mod:`hub.prompts`: when households run flexible appliances, and what they are told;
- :mod:`hub.settlement`: what neighbours owe each other, a ledger and monthly statements;
- :mod:`hub.ops`: health, the operator's monitor, provisioning, certificates, export, summaries;
- :mod:`hub.cli`: ``coopwatt-hub``, one module per command group.
"""

from protocol import __version__

__all__ = ["__version__"]

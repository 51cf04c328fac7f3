"""Operations: what the cooperative's operator runs and watches beside the hub.

Modules, pure core first:

- :mod:`.community`: neighbourhood figures that never expose a single home (groups of at least
  k homes), read through the ``community-stats`` purpose;
- :mod:`.ha_discovery`: Home Assistant MQTT discovery messages for the hub's metrics;
- :mod:`.summary`: per-home readings and energy over the stored period, from lifetime counters;
- :mod:`.export`: stored readings as CSV, streamed;
- :mod:`.health`: per-home health, alerts and ingest rates, published over MQTT by the hub;
- :mod:`.monitor`: ``coopwatt-hub monitor``, the operator's live view from an MQTT connection
  alone (no numpy, no database);
- :mod:`.pki`: the cooperative's own certificate authority: server and client certificates, CRL;
- :mod:`.provision`: a home's broker credentials, certificate, agent config and bundle;
- :mod:`.broker_config`: a working Mosquitto configuration for one cooperative.
"""

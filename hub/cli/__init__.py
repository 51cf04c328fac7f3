"""``coopwatt-hub``: the hub's command line, thin click layers over the library.

An operator-fixable error prints one ``Error: ...`` line and exits 2.

Modules:

- :mod:`.main`: the ``coopwatt-hub`` group (the console script's entry point) and where every
  command is registered;
- :mod:`.common`: what the command modules share: opening an existing database read-only (the
  operator's error is :class:`protocol.cli.CliError`, the one every coopwatt CLI raises);
- :mod:`.run`: ``run``: the hub or an extra ingest worker (:func:`hub.app.serve`) under signals;
- :mod:`.readings`: ``export`` and ``summary``;
- :mod:`.forecast`: ``weather import``, ``forecast``, ``backtest``, ``train``;
- :mod:`.prompts`: ``prompts show`` and ``prompts plan``;
- :mod:`.settlement`: ``settle``, ``close``, ``statement``, ``community``, ``report``,
  ``publish-statements``;
- :mod:`.ops`: ``broker-config``, ``provision``, ``deprovision``, ``homes``, ``monitor``.
"""

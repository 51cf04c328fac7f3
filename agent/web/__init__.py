"""The household's own page: a small web server the Pi runs beside the agent.

``coopwatt-agent web`` serves it on the home network. It never talks to the cooperative's broker:
it asks the running agent over its local socket (:mod:`agent.local_link`), reads the home's own
energy log (:mod:`agent.energy_log`) and the hub's statements and receipts (:mod:`agent.mailbox`),
and writes the same consent ledger as ``coopwatt-agent consent`` (:mod:`agent.consent_ledger`).
It stays small (under 30 MiB resident): no paho, pymodbus or numpy on its import path.

Pure core first:

| module | what |
|---|---|
| ``charts.py`` | bar charts as inline SVG, a pure function of the numbers |
| ``periods.py`` | local-time edges (hours of a day, days of a week or month), DST-correct |
| ``contrast.py`` | the WCAG contrast ratio of two colours (the page's palette is checked with it) |
| ``words.py`` | what the page says about streams, purposes, resolutions, levels, statement lines |
| ``settings.py`` | the agent config's few keys the page needs, read without the agent's imports |
| ``i18n.py`` | languages: negotiation, gettext catalogues, Babel's dates, numbers and currency |
| ``throttle.py`` | slowing down repeated wrong codes and passwords (per address and overall) |
| ``household.py`` | the household's secret: one-time setup code and the scrypt password hash |
| ``sessions.py`` | signed-in and guest sessions in memory, each with its CSRF token |
| ``forms.py`` | reading and checking a POST: size, type, CSRF, origin, fields |
| ``pages.py`` | what each page shows, built from the agent's state and the home's files |
| ``app.py`` | the WSGI application: routes, sign-in, forms, headers |
| ``server.py`` | the threaded HTTP server that runs it |
"""

"""The community forecast: the neighbourhood's demand, PV and wind for the next 48 hours in
15-minute steps, each with P10/P50/P90, from an ONNX model on the stored history and open
weather data, published for the prompts and the operator.

Modules, pure core first:

- :mod:`.site`: where the cooperative is and how its days run (:class:`~hub.forecast.site.Site`;
  no numpy, so the hub's config loads without it);
- :mod:`.solar`: sun position and clear-sky irradiance, numpy array types;
- :mod:`.local_time`: the site's wall clock and holidays over arrays of UTC times;
- :mod:`.weather`: imported Open-Meteo forecasts, read and resampled to the steps;
- :mod:`.features`: history and weather -> the model's inputs, shared with training;
- :mod:`.model`: the ONNX model, :func:`~hub.forecast.model.make_forecast` with labelled
  fallbacks for whatever is missing, and :func:`~hub.forecast.model.tuned_forecast`;
- :mod:`.tuning`: the cooperative's own recent weeks as judge: demand's forecaster chosen per
  horizon band among the model and simple methods, P10-P90 bands calibrated to cover 80 %;
- :mod:`.backtest`: forecasts issued in the past, scored against what happened;
- :mod:`.series`: the forecast's tables in the hub database: imported weather, and the community
  series (per-device power in 15-minute slots: a trigger queues each reading as it is committed,
  and the queue is folded in before each read);
- :mod:`.published`: the ``hub/forecast`` message read back, for the prompts and health;
- :mod:`.service`: the refresh beside ingest: read the community history (only homes whose
  grant shares it), forecast, publish on ``hub/forecast``.
"""

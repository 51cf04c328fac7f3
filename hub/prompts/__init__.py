"""Appliance-timing prompts: when households run their flexible appliances (dishwasher, washing
machine, car), so that the neighbourhood uses its own solar and wind without every home piling
into the same sunny hour, and what each household is told.

Modules, pure core first:

- :mod:`.planner`: the whole neighbourhood's runs placed against the forecast, each household's
  constraints hard;
- :mod:`.messages`: a home's prompt from a plan: the traffic light ahead, each appliance's next
  window, why in plain words, what it is expected to bring;
- :mod:`.learning`: how much each home actually shifts, from its feedback and its meters;
- :mod:`.service`: the edge: appliances and feedback in (routed from ingest), the forecast in,
  prompts out on a connection of its own; the prompt tables in the hub database.
"""

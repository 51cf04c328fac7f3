"""What the page says about streams, purposes, resolutions, the light and statement lines.

Each text is a gettext message id marked with :func:`N_` (translated when the page renders, in
the reader's language); :mod:`protocol.consent`'s own descriptions are English only.
"""

from __future__ import annotations

from typing import Final


def N_(message: str) -> str:
    """Mark ``message`` for translation without translating it here."""
    return message


STREAMS: Final = {
    "grid": N_("Electricity meter"),
    "pv": N_("Solar panels"),
    "wind": N_("Wind turbine"),
    "battery": N_("Home battery"),
    "load": N_("Appliance meter"),
}
STREAM_DETAILS: Final = {
    "grid": N_("what your home takes from the grid and gives back to it"),
    "pv": N_("what your solar panels generate"),
    "wind": N_("what your wind turbine generates"),
    "battery": N_("what your battery charges and discharges"),
    "load": N_("what the metered appliance uses"),
}
PURPOSES: Final = {
    "forecast": N_("Forecast"),
    "prompts": N_("Advice on good times"),
    "settlement": N_("Settlement"),
    "community-stats": N_("Neighbourhood figures"),
}
PURPOSE_EXPLANATIONS: Final = {
    "forecast": N_(
        "The cooperative forecasts how much power the neighbourhood will need and how much "
        "its own solar panels and wind turbines will make. Your readings make that forecast "
        "better for everyone."
    ),
    "prompts": N_(
        "The cooperative suggests good times to run your appliances, when local power is "
        "plentiful. It needs your readings to plan your appliances and to learn how well its "
        "advice fits your home."
    ),
    "settlement": N_(
        "The cooperative works out how much energy you bought from and sold to your "
        "neighbours, and what you pay or are paid. Without your electricity meter it cannot "
        "settle your energy with the neighbours."
    ),
    "community-stats": N_(
        "The cooperative publishes figures about the whole neighbourhood, such as how much of "
        "its power it made itself. They are always about groups of homes, never about yours "
        "alone."
    ),
}
RESOLUTIONS: Final = {
    "raw": N_("every reading as taken (every few seconds)"),
    "15min": N_("one total per quarter hour"),
    "hourly": N_("one total per hour"),
    "daily": N_("one total per day"),
}
LEVELS: Final = {
    "green": N_("Good time to use power"),
    "amber": N_("An ordinary time to use power"),
    "red": N_("Avoid using power now if you can"),
}
LEVEL_SHORT: Final = {"green": N_("Good"), "amber": N_("Ordinary"), "red": N_("Avoid")}
ANSWERS: Final = {
    "accepted": N_("You said you will run it then."),
    "done": N_("You said it is running."),
    "snoozed": N_("You snoozed this one."),
}
STATEMENT_ITEMS: Final = {
    "import-neighbours": N_("Bought from neighbours"),
    "import-grid": N_("Bought from the grid"),
    "export-neighbours": N_("Sold to neighbours"),
    "export-grid": N_("Sold to the grid"),
    "adjustments": N_("Corrections of earlier months"),
    "repricing": N_("Earlier months priced again"),
    "rounding": N_("Rounding"),
}
RECEIPTS: Final = {
    "consent-recorded": N_("The cooperative recorded your sharing choices (version %(version)s)."),
    "consent-refused": N_("The cooperative refused version %(version)s of your choices."),
    "data-erased": N_("The cooperative erased data you no longer share (version %(version)s)."),
}
ROLES: Final = {
    "grid": N_("electricity meter"),
    "pv": N_("solar inverter"),
    "wind": N_("wind turbine"),
    "battery": N_("battery"),
    "load": N_("appliance meter"),
}
QUANTITIES: Final = {
    "power_w": N_("Power"),
    "energy_import_wh": N_("Taken from the grid, meter total"),
    "energy_export_wh": N_("Given to the grid, meter total"),
    "energy_wh": N_("Energy, meter total"),
    "voltage_v": N_("Voltage"),
    "current_a": N_("Current"),
    "frequency_hz": N_("Frequency"),
    "power_factor": N_("Power factor"),
    "temperature_c": N_("Temperature"),
    "wind_speed_m_s": N_("Wind speed"),
    "state": N_("State"),
    # A P1 smart meter's tariffs (numbered as the meter numbers them) and phases.
    "energy_import_t1_wh": N_("Taken from the grid at tariff 1, meter total"),
    "energy_import_t2_wh": N_("Taken from the grid at tariff 2, meter total"),
    "energy_export_t1_wh": N_("Given to the grid at tariff 1, meter total"),
    "energy_export_t2_wh": N_("Given to the grid at tariff 2, meter total"),
    "voltage_l1_v": N_("Voltage L1"),
    "voltage_l2_v": N_("Voltage L2"),
    "voltage_l3_v": N_("Voltage L3"),
    "current_l1_a": N_("Current L1"),
    "current_l2_a": N_("Current L2"),
    "current_l3_a": N_("Current L3"),
    "power_l1_w": N_("Power L1"),
    "power_l2_w": N_("Power L2"),
    "power_l3_w": N_("Power L3"),
}

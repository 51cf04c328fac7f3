"""Named instants for tests, UTC epoch milliseconds.

A test file that starts its clock somewhere sets ``T0`` from one of these, so its figures still
read ``T0 + 15 * MIN`` and the name says why it starts there: on a day boundary, at a local hour
of the day, or anywhere at all. The files' expected values were worked out from these instants:
changing one changes them.
"""

from __future__ import annotations

from typing import Final

HOUR_MS: Final = 3_600_000
DAY_MS: Final = 24 * HOUR_MS

# 2025-06-15 15:06:40 UTC: a round number of milliseconds on a whole second, on no minute,
# quarter-hour or day boundary, for tests in which only time differences matter.
ROUND_SECOND_MS: Final = 1_750_000_000_000

# Midnight UTC opening June 2026 (a Monday): the first 15-minute settlement interval of the
# month, and a day boundary for daily roll-ups.
JUNE_1_2026_MIDNIGHT_UTC_MS: Final = 1_780_272_000_000

# Midnight UTC opening July 2026 (a Wednesday), 30 days later.
JULY_1_2026_MIDNIGHT_UTC_MS: Final = JUNE_1_2026_MIDNIGHT_UTC_MS + 30 * DAY_MS

# 06:00 UTC on 1 July 2026: 08:00 in Amsterdam (CEST, UTC+2).
JULY_1_2026_0600_UTC_MS: Final = JULY_1_2026_MIDNIGHT_UTC_MS + 6 * HOUR_MS

# 10:00 UTC on 1 July 2026: 12:00 in Amsterdam (CEST, UTC+2).
JULY_1_2026_1000_UTC_MS: Final = JULY_1_2026_MIDNIGHT_UTC_MS + 10 * HOUR_MS

"""Is the system clock synchronised (NTP/chrony/timesyncd)? Readings are stamped with it.

Asks the kernel through ``adjtimex(2)``, which every time daemon keeps informed: the call returns
``TIME_ERROR`` (5) while the clock is not synchronised. No daemon-specific tool is needed.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

TIME_ERROR = 5
_TIMEX_SIZE = 256  # struct timex is 208 bytes on 64-bit Linux; modes=0 only reads


def clock_synced() -> bool | None:
    """True when synchronised, False when not, None where the kernel cannot tell us."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        buf = ctypes.create_string_buffer(_TIMEX_SIZE)  # zeroed: modes = 0, a read-only query
        state = libc.adjtimex(buf)
    except (OSError, AttributeError):
        return None
    if state < 0:
        return None
    return bool(state != TIME_ERROR)

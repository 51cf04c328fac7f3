"""Is the system clock synchronised (NTP/chrony/timesyncd)? Readings are stamped with it.

Asks the kernel through ``adjtimex(2)``, which every time daemon keeps informed: the call returns
``TIME_ERROR`` (5) while the clock is not synchronised. No daemon-specific tool is needed.
"""

from __future__ import annotations

import ctypes
import functools
import sys

TIME_ERROR = 5
_TIMEX_SIZE = 256  # struct timex is 208 bytes on 64-bit Linux; modes=0 only reads


def clock_synced() -> bool | None:
    """True when synchronised, False when not, None where the kernel cannot tell us."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = _libc()
        buf = ctypes.create_string_buffer(_TIMEX_SIZE)  # zeroed: modes = 0, a read-only query
        state = libc.adjtimex(buf)
    except (OSError, AttributeError):
        return None
    if state < 0:
        return None
    return bool(state != TIME_ERROR)


@functools.cache
def _libc() -> ctypes.CDLL:
    """The C library the interpreter already has loaded: asked for by no name, so nothing is
    searched (ctypes.util.find_library runs ``ldconfig -p``, a fork of the agent, each call)."""
    return ctypes.CDLL(None, use_errno=True)

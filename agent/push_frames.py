"""What a push meter's decoder gives the agent: decoded frames, or a fault saying what was wrong.

Smart meters with a P1 port (DSMR) or an optical SML interface are not polled: they send a frame
every second or few, whether anyone listens or not. A decoder is fed the bytes as they arrive from
the port, in chunks of any size, and returns each complete frame it found. A frame that fails its
CRC, is cut short, or is noise is a :class:`FrameFault`, never a reading: a wrong number in the
outbox is worse than a gap.

Quantities use the glossary's names (:mod:`protocol.quantities`) with the grid role's signs:
``power_w`` is + import, - export; counters are lifetime Wh with the tariffs summed, and the
per-tariff counters (``energy_import_t1_wh`` ...) are kept beside them, numbered as the meter
numbers its tariffs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Protocol

REVERSED_BITS: Final = bytes(int(f"{b:08b}"[::-1], 2) for b in range(256))
"""Each byte with its bits in reverse order, for ``bytes.translate``: both meters' CRCs take a
byte's bits low first (reflected), which lets C code working high bit first compute them."""


@dataclass(frozen=True, slots=True)
class Frame:
    """One decoded frame: glossary quantities (W, Wh, V, A) and the meter's identity."""

    quantities: dict[str, float]
    meter_id: str | None = None  # the equipment identifier the frame carries, if any
    meter_ts_ms: int | None = None  # the meter's own clock (UTC epoch ms), if the frame has one


@dataclass(frozen=True, slots=True)
class FrameFault:
    """A frame, or a stretch of bytes, that gave no reading; ``reason`` is one sentence."""

    reason: str


class FrameDecoder(Protocol):
    """Turns a push meter's byte stream into frames.

    ``feed`` keeps an incomplete frame buffered until the next call, bounded so that a stream of
    noise cannot grow it without limit (bytes dropped that way come back as a :class:`FrameFault`).
    """

    def feed(self, data: bytes) -> list[Frame | FrameFault]: ...

"""The forecast as its followers receive it: the retained ``hub/forecast`` message, read back.

The prompts service plans on it and operator health reports its age; both take the message on
their own MQTT connection and read it here, so they agree on what counts as a forecast. No numpy:
this only needs the codec.
"""

from __future__ import annotations

import logging

from protocol.codec import CodecError, decode_message
from protocol.payloads import Forecast

log = logging.getLogger(__name__)


def forecast_from_message(topic: str, payload: bytes) -> Forecast | None:
    """The :class:`Forecast` in a message on ``hub/forecast``, or None (logged as a warning) for
    one the strict codec refuses or that holds something else."""
    try:
        _, message = decode_message(topic, payload)
    except CodecError as exc:
        log.warning("ignoring forecast on %r: %s", topic, exc)
        return None
    return message if isinstance(message, Forecast) else None

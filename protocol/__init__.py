"""coopwatt wire contract v1: topics, payloads, the strict codec, quantities, clocks, MQTT session.

Standard library and paho-mqtt only, so both the household agent and the hub can import it.
"""

WIRE_VERSION = 1
__version__ = "0.1.0"  # the distribution's version (pyproject reads it from here)

"""Brokers for tests: the simulator's launcher is the one implementation (see sim/broker.py)."""

from sim.broker import RunningBroker as Broker
from sim.broker import find_mosquitto, free_port, run_mosquitto

__all__ = ["Broker", "find_mosquitto", "free_port", "run_mosquitto"]

"""Commissioning a P1 or SML meter: listen to the port, say what meter it is, read it once.

``coopwatt-agent scan --p1 URL`` listens for a telegram and names the meter ("P1 meter, DSMR
5.0, id ...") and the profile that fits; on a serial port without a ``baud`` it tries DSMR 4/5's
115200 8N1, then DSMR 2.2's 9600 7E1. ``read --p1 URL`` waits for one good telegram and prints its
quantities; ``read --sml URL`` does the same for a German meter's optical SML port (an IR head,
9600 8N1). A meter sends every 1 s (DSMR 5, SML) or 10 s (older DSMR), so these wait up to
``timeout_s`` of wall time for it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.dsmr_decode import DsmrDecoder, ObisMap
from agent.modbus_io import DeviceError
from agent.profiles import Profile, ProfileError, load_profile
from agent.push_meter import PushMeter, parse_port_url
from protocol.clock import SystemClock
from protocol.quantities import Role

# What a serial port is tried at, in order, when its URL names no baud: (baud, framing, profile).
SERIAL_SETTINGS = ((115200, "8N1", "dsmr-5"), (9600, "7E1", "dsmr-2"))


@dataclass(frozen=True, slots=True)
class P1Found:
    """What listening to a P1 port found."""

    url: str
    version: str  # "DSMR 5.0", "DSMR 2.2/3.0", "e-MUCS (Belgium), version 50217"
    meter_id: str | None
    header: str  # the telegram's identification line (maker and model)
    profile: str  # the shipped profile that fits
    baud: int | None  # the serial speed it was heard at; None over TCP
    framing: str | None

    def describe(self) -> str:
        at = f" at {self.baud} {self.framing}" if self.baud else ""
        ident = f", id {self.meter_id}" if self.meter_id else ""
        return f"P1 meter, {self.version}{ident} ({self.header}){at}: profile {self.profile}"


def _listener(url: str, obis: ObisMap, baud: int, framing: str) -> tuple[PushMeter, DsmrDecoder]:
    # CRC not required: a DSMR 2.2 meter must be recognised too (a CRC, when sent, is checked).
    decoder = DsmrDecoder(obis, require_crc=False)
    meter = PushMeter("scan", Role.GRID, url, decoder, SystemClock(), baud=baud, framing=framing)
    return meter, decoder


def _fitting_profile(version: str, has_crc: bool) -> str:
    if version.startswith("e-MUCS"):
        return "e-mucs"
    return "dsmr-5" if has_crc else "dsmr-2"


def scan_p1(
    url: str, *, timeout_s: float = 12.0, profile_dirs: list[Path] | None = None
) -> P1Found:
    """Listen for a telegram; raises ValueError (bad URL) or DeviceError saying what was heard."""
    address = parse_port_url(url)
    obis = _obis("dsmr-5", profile_dirs)
    if address.kind == "tcp" or address.baud is not None:
        tries = [(address.baud or 115200, address.framing or "8N1")]
    else:
        tries = [(b, f) for b, f, _ in SERIAL_SETTINGS]
    heard: list[str] = []
    for baud, framing in tries:
        meter, decoder = _listener(url, obis, baud, framing)
        try:
            if meter.wait(timeout_s / len(tries)) and (telegram := decoder.last) is not None:
                return P1Found(
                    url, telegram.version, telegram.meter_id, telegram.header,
                    _fitting_profile(telegram.version, telegram.has_crc),
                    baud if address.kind == "serial" else None,
                    framing if address.kind == "serial" else None,
                )  # fmt: skip
            heard.append(_what_was_heard(meter, baud, framing, address.kind == "serial"))
        finally:
            meter.close()
    raise DeviceError(f"no P1 telegram on {url}: " + "; ".join(heard), transient=True)


def _what_was_heard(meter: PushMeter, baud: int, framing: str, serial: bool) -> str:
    at = f"at {baud} {framing}: " if serial else ""
    if meter.port_error:
        return at + meter.port_error
    if meter.last_fault:
        return at + meter.last_fault
    return at + "nothing"


def _obis(profile: str, profile_dirs: list[Path] | None) -> ObisMap:
    p = load_profile(profile, profile_dirs)
    if p.obis is None:
        raise ProfileError(f"{profile} is not a P1 profile")
    return p.obis


def read_p1(
    url: str,
    profile: str | None = None,
    *,
    role: Role | None = None,
    timeout_s: float = 12.0,
    profile_dirs: list[Path] | None = None,
) -> dict[str, Any]:
    """One good telegram's quantities: ``{"device", "profile", "bus", "role", "quantities"}``.

    Raises ValueError (bad URL), :class:`ProfileError` or :class:`DeviceError`."""
    name = profile or "dsmr-5"
    p: Profile = load_profile(name, profile_dirs)
    if p.kind != "p1" or p.obis is None:
        raise ProfileError(f"{name} is not a P1 profile (dsmr-5, dsmr-2, e-mucs)")
    parse_port_url(url)
    decoder = DsmrDecoder(p.obis, require_crc=p.crc)
    meter = PushMeter(
        "p1", role or p.role, url, decoder, SystemClock(), baud=p.baud, framing=p.framing
    )
    try:
        if not meter.wait(timeout_s):
            reason = meter.port_error or meter.last_fault or "nothing arrived"
            raise DeviceError(
                f"no good P1 telegram within {timeout_s:g} s: {reason}", transient=True
            )
        quantities = meter.read()
    finally:
        meter.close()
    telegram = decoder.last
    assert telegram is not None
    ident = f", id {telegram.meter_id}" if telegram.meter_id else ""
    return {
        "device": f"P1 meter, {telegram.version}{ident}",
        "profile": name,
        "bus": url,
        "role": meter.role.value,
        "quantities": quantities,
    }


def with_baud(found: P1Found) -> str:
    """The URL to configure: a serial port with the speed it was heard at."""
    if found.baud is None or "?" in found.url:
        return found.url
    return f"{found.url}?baud={found.baud}&framing={found.framing}"


def read_sml(url: str, *, role: Role | None = None, timeout_s: float = 12.0) -> dict[str, Any]:
    """One good SML frame's quantities, as :func:`read_p1` gives a telegram's."""
    from agent.sml_decode import SmlDecoder  # noqa: PLC0415

    parse_port_url(url)
    meter = PushMeter(
        "sml", role or Role.GRID, url, SmlDecoder(), SystemClock(), baud=9600, framing="8N1",
        what="SML frame",
    )  # fmt: skip
    try:
        if not meter.wait(timeout_s):
            reason = meter.port_error or meter.last_fault or "nothing arrived"
            raise DeviceError(f"no good SML frame within {timeout_s:g} s: {reason}", transient=True)
        quantities = meter.read()
        frame = meter.latest
    finally:
        meter.close()
    ident = f", id {frame.meter_id}" if frame is not None and frame.meter_id else ""
    return {
        "device": f"SML meter{ident}",
        "profile": "sml",
        "bus": url,
        "role": meter.role.value,
        "quantities": quantities,
    }

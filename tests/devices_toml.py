"""``[[devices]]`` tables as an agent config or a provisioning ``--devices`` file holds them."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from sim.modbus_server import Endpoint


def write_grid_meter_file(folder: Path, modbus: str) -> Path:
    """``folder/devices.toml``: one Eastron SDM630 grid meter at unit 1 of ``modbus``."""
    path = folder / "devices.toml"
    path.write_text(
        '[[devices]]\nname = "grid-meter"\nprofile = "eastron-sdm630"\n'
        f'modbus = "{modbus}"\nunit = 1\n'
    )
    return path


def devices_tables(endpoints: Mapping[str, Endpoint]) -> str:
    """One table per simulated device, by name, pointing at the server that answers for it."""
    return "".join(
        f'[[devices]]\nname = "{name}"\nprofile = "{ep.profile}"\n'
        f'modbus = "tcp://{ep.host}:{ep.port}"\nunit = {ep.unit}\n\n'
        for name, ep in endpoints.items()
    )

"""The neighbourhood simulator: households with PV and wind, and the Modbus devices that show them.

``profiles`` holds pure, seeded profiles of demand, sun and wind; ``household`` turns them into a
home with exact energy counters; ``registers`` encodes a device's values as vendor register
images; ``modbus_server`` serves those images over Modbus TCP at simulated time.
"""

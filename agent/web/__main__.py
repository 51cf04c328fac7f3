"""``python -m agent.web``: the household page's own process.

``coopwatt-agent web`` checks its options and then becomes this (the same process, by
``exec``), so the page's process holds none of what the agent's command line imports (Modbus,
MQTT): it must stay under 30 MiB resident on a Pi Zero beside the agent.
"""

from __future__ import annotations

import sys

# Before anything imports hashlib: without OpenSSL's _hashlib, hashlib uses Python's own SHA-2
# and the process does without libcrypto (3.4 MiB). The password's scrypt then runs in a helper
# process (agent/web/household.py).
sys.modules.setdefault("_hashlib", None)  # type: ignore[arg-type]

import argparse  # noqa: E402

from agent.web.settings import SettingsError, read_settings  # noqa: E402
from protocol.systemd import Notifier, configure_logging  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m agent.web", description=__doc__)
    parser.add_argument("--config", required=True, help="the agent's config file (TOML)")
    parser.add_argument("--bind", default="0.0.0.0", help="the address to listen on")  # noqa: S104
    parser.add_argument("--port", type=int, default=8080, help="the TCP port")
    parser.add_argument("--log-level", default="info",
                        choices=["debug", "info", "warning", "error"])  # fmt: skip
    args = parser.parse_args(argv)
    configure_logging(args.log_level)
    from pathlib import Path  # noqa: PLC0415

    try:
        settings = read_settings(Path(args.config))
    except SettingsError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 2
    # Imported after the config is read: a mistake there is told without the page's imports.
    from zoneinfo import ZoneInfo  # noqa: PLC0415

    from agent.web.app import WebApp  # noqa: PLC0415
    from agent.web.i18n import load_slim_locale_data, warm_up  # noqa: PLC0415
    from agent.web.server import serve  # noqa: PLC0415
    from protocol.clock import SystemClock  # noqa: PLC0415

    load_slim_locale_data()
    app = WebApp(settings, SystemClock())
    warm_up(ZoneInfo(settings.timezone))
    app.warm_up()
    try:
        serve(app, args.bind, args.port, Notifier.from_env())
    except OSError as exc:
        print(f"Error: cannot serve on {args.bind}:{args.port}: {exc.strerror or exc}",
              file=sys.stderr)  # fmt: skip
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

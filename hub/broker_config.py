"""``coopwatt-hub broker-config``: a working Mosquitto configuration for one cooperative.

Writes, into one folder (``/etc/coopwatt/broker`` by default):

- ``mosquitto.conf``: a TLS listener that requires a client certificate from the cooperative's CA
  and a password, ``allow_anonymous false``, the password file and pattern ACLs,
  ``max_packet_size`` from the wire contract's payload limit, persistence, logs to stdout (the
  journal), and optionally a plain listener on loopback for the hub on the same machine;
- ``acl`` (from ``firmware-configs/mosquitto/acl.template``), ``passwd`` (0600);
- ``certs/``: the CA certificate, its revocation list, the broker's certificate and key (0600);
- ``ca/``: the CA itself (its key 0600, the folder root-only);
- ``clients/hub`` and ``clients/operator``: the hub's and the operator's credentials, with a
  ready ``[broker]`` table for the hub's config and an ``operator.toml`` for
  ``coopwatt-hub monitor``.

Running it again keeps the CA, the accounts and every provisioned home, reissues the broker's
certificate only when its names change, and rewrites the config files.
"""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from cryptography import x509

from hub.pki import write_private, write_public
from hub.provision import (
    HUB_USER,
    OPERATOR_USER,
    BrokerSite,
    ClientFiles,
    Layout,
    PasswordFile,
    ProvisionError,
    chown,
    data_path,
    ensure_service_account,
    locked,
    render,
)
from protocol.codec import MAX_PAYLOAD_BYTES
from protocol.topics import check_id

log = logging.getLogger(__name__)

# A publish packet is the payload plus its topic (under 100 bytes in v1), a packet id and a
# header; 4 KiB of headroom also covers MQTT 5 properties.
MAX_PACKET_BYTES: Final = MAX_PAYLOAD_BYTES + 4096
DEFAULT_DIR: Final = Path("/etc/coopwatt/broker")
DEFAULT_PERSISTENCE: Final = Path("/var/lib/mosquitto")


@dataclass(frozen=True)
class BrokerFiles:
    """What :func:`write_broker_config` wrote."""

    layout: Layout
    site: BrokerSite
    hub: ClientFiles
    operator: ClientFiles
    hub_config: Path  # a [broker] table for hub.toml
    operator_config: Path  # a config for coopwatt-hub monitor
    new_accounts: tuple[str, ...]
    server_cert_issued: bool


def _split_names(names: list[str]) -> tuple[list[str], list[str]]:
    hostnames: list[str] = []
    ips: list[str] = []
    for name in names:
        try:
            ips.append(str(ipaddress.ip_address(name)))
        except ValueError:
            if not name or any(c in name for c in " /:@") or len(name) > 253:
                raise ProvisionError(f"{name!r} is not a hostname or IP address") from None
            hostnames.append(name)
    return hostnames, ips


def _server_names(cert_path: Path) -> set[str]:
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (OSError, ValueError, x509.ExtensionNotFound):
        return set()
    return {str(v) for v in sans.get_values_for_type(x509.DNSName)} | {
        str(v) for v in sans.get_values_for_type(x509.IPAddress)
    }


def write_broker_config(
    root: Path,
    coop: str,
    names: list[str],
    *,
    tls_port: int = 8883,
    tls_bind: str | None = None,
    local_port: int | None = 1883,
    persistence_dir: Path = DEFAULT_PERSISTENCE,
    broker_user: str | None = None,
    hub_user: str | None = None,
) -> BrokerFiles:
    """Write the folder's config set; ``names`` are the hostnames/IPs agents reach the broker by.

    ``tls_bind`` limits the TLS listener to one address (all by default). ``local_port`` adds a
    loopback plain listener for the hub (None: none). ``broker_user`` owns the files the broker
    must read when it drops root; ``hub_user`` owns the hub's credentials (the account
    ``coopwatt-hub run`` runs as). Both only matter when running as root.
    """
    check_id(coop, "coop")
    if not names:
        raise ProvisionError("name at least one hostname or IP address agents use for the broker")
    hostnames, ips = _split_names(names)
    for port in (tls_port, local_port):
        if port is not None and not 1 <= port <= 65535:
            raise ProvisionError(f"port {port} is not 1 to 65535")
    if local_port is not None and local_port == tls_port:
        raise ProvisionError("the TLS and the local listener need different ports")
    layout = Layout(root)
    host = f"[{names[0]}]" if ":" in names[0] else names[0]  # an IPv6 address in a URL
    site = BrokerSite(
        coop=coop,
        public_url=f"mqtts://{host}:{tls_port}",
        tls_port=tls_port,
        local_port=local_port,
        broker_user=broker_user,
    )
    with locked(layout):
        if layout.settings.exists():
            old = BrokerSite.load(layout)
            if old.coop != coop:
                raise ProvisionError(
                    f"{root} is the broker of cooperative {old.coop!r}, not {coop!r}"
                )
        ca = layout.ca(coop)
        layout.certs.mkdir(parents=True, exist_ok=True)
        server_crt, server_key = layout.certs / "server.crt", layout.certs / "server.key"
        issued_server = False
        if _server_names(server_crt) != set(hostnames) | set(ips) or not server_key.exists():
            issued = ca.issue_server(hostnames, ips)
            write_private(server_key, issued.key_pem)
            write_public(server_crt, issued.cert_pem)
            issued_server = True
        chown(server_key, broker_user)
        layout.publish_ca_files(ca)
        write_public(layout.settings, site.to_toml().encode())
        passwords = PasswordFile(layout.passwd)
        passwords.save(broker_user)  # exists, 0600, owned by the broker, before it starts

        new: list[str] = []
        accounts: dict[str, ClientFiles] = {}
        for user, owner in ((HUB_USER, hub_user), (OPERATOR_USER, None)):
            files, created = ensure_service_account(layout, site, ca, user, owner)
            accounts[user] = files
            if created:
                new.append(user)

        write_public(
            layout.acl,
            render(
                data_path("firmware-configs", "mosquitto", "acl.template"),
                coop=coop,
                hub_user=HUB_USER,
                operator_user=OPERATOR_USER,
            ).encode(),
            0o644,
        )
        local = ""
        if local_port is not None:
            local = render(
                data_path("firmware-configs", "mosquitto", "local-listener.template"),
                local_port=local_port,
            )
        conf = render(
            data_path("firmware-configs", "mosquitto", "mosquitto.conf.template"),
            coop=coop,
            dir=root.resolve(),
            max_payload=MAX_PAYLOAD_BYTES,
            max_packet_size=MAX_PACKET_BYTES,
            persistence_dir=persistence_dir,
            tls_port=tls_port,
            tls_bind=tls_bind or "",
            local_listener=local,
        )
        write_public(layout.conf, conf.encode(), 0o644)

        hub_files, operator_files = accounts[HUB_USER], accounts[OPERATOR_USER]
        hub_config = hub_files.folder / "broker.toml"
        write_private(hub_config, _client_table(site, HUB_USER, hub_files, local=True).encode())
        chown(hub_config, hub_user)
        operator_config = operator_files.folder / "operator.toml"
        write_private(
            operator_config,
            (
                "# coopwatt-hub monitor --config operator.toml\n"
                f'coop = "{coop}"\n\n' + _client_table(site, OPERATOR_USER, operator_files)
            ).encode(),
        )
    log.info("broker config written dir=%s coop=%s new_accounts=%s", root, coop, ",".join(new))
    return BrokerFiles(
        layout,
        site,
        hub_files,
        operator_files,
        hub_config,
        operator_config,
        tuple(new),
        issued_server,
    )


def _client_table(site: BrokerSite, user: str, files: ClientFiles, local: bool = False) -> str:
    """A ``[broker]`` table for a service account: loopback when there is a local listener."""
    lines = ["[broker]"]
    if local and site.local_port is not None:
        lines.append(f'url = "mqtt://127.0.0.1:{site.local_port}"')
    else:
        lines += [
            f'url = "{site.public_url}"',
            f'ca_file = "{files.ca}"',
            f'cert_file = "{files.cert}"',
            f'key_file = "{files.key}"',
        ]
    lines += [f'username = "{user}"', f'password_file = "{files.password}"']
    return "\n".join(lines) + "\n"

"""``coopwatt-hub broker-config``: a working Mosquitto configuration for one cooperative.

Writes, into one folder (``/etc/coopwatt/broker`` by default):

- ``mosquitto.conf``, with ``per_listener_settings true`` and two listeners:

  - the network listener (TLS): a client certificate from the cooperative's CA is required and
    is the login; its common name (a home id, or ``_operator``) is the account and the client
    id (``use_identity_as_username``, ``use_username_as_clientid``), so no client can take
    another's id or present another's account; ACLs in ``acl``, one block per home;
  - the loopback listener (plain MQTT on 127.0.0.1): the hub, its workers and the operator's
    tools on this machine, by password (``passwd``, 0600: the hub and the operator only);
    ACLs in ``acl-local``. The hub's account exists only here.

  Also ``max_packet_size`` from the wire contract's payload limit, persistence, and logs to
  stderr (the journal), including every connection and subscription with its account;
- ``certs/``: the CA certificate, its revocation list, the broker's certificate and key (0600);
- ``ca/``: the CA itself (its key 0600, the folder root-only);
- ``clients/hub`` and ``clients/operator``: the hub's password with a ready ``[broker]`` table
  for the hub's config, and the operator's certificate with an ``operator.toml`` for
  ``coopwatt-hub monitor``.

It creates the persistence folder and gives it to the broker's user, and refuses folders the
broker's user could not reach (Mosquitto would otherwise fail every save without a word).
Running it again keeps the CA, the accounts and every provisioned home, reissues the broker's
certificate only when its names change, and rewrites the config files.
"""

from __future__ import annotations

import dataclasses
import grp
import ipaddress
import logging
import os
import pwd
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from cryptography import x509

from hub.ops.pki import write_private, write_public
from hub.ops.provision import (
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
    migrate_home_passwords,
    render,
    write_acls,
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


def _can_traverse(st: os.stat_result, uid: int, gids: set[int]) -> bool:
    if st.st_uid == uid:
        return bool(st.st_mode & stat.S_IXUSR)
    if st.st_gid in gids:
        return bool(st.st_mode & stat.S_IXGRP)
    return bool(st.st_mode & stat.S_IXOTH)


def check_traversable(folder: Path, user: str) -> None:
    """:class:`ProvisionError` unless ``user`` can reach ``folder`` (every folder above it
    searchable by it). Mosquitto drops root for this user before reading its files and saving
    its persistence, and a folder it cannot reach makes every save fail without a word."""
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        raise ProvisionError(f"user {user!r} does not exist; pass --broker-user") from None
    if entry.pw_uid == 0:
        return
    gids = {entry.pw_gid} | {g.gr_gid for g in grp.getgrall() if user in g.gr_mem}
    path = folder.resolve()
    for parent in (path, *path.parents):
        if not parent.exists():
            continue  # created below, mode 0755
        if not _can_traverse(parent.stat(), entry.pw_uid, gids):
            raise ProvisionError(
                f"{parent} is not searchable by {user}, so Mosquitto could not reach {folder} "
                f"(chmod o+x {parent}, or choose another folder)"
            )


def prepare_persistence(folder: Path, broker_user: str | None) -> None:
    """Create Mosquitto's persistence folder and give it to the broker's user (when root)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ProvisionError(f"cannot create {folder}: {exc.strerror or exc}") from None
    if not folder.is_dir():
        raise ProvisionError(f"--persistence-dir {folder} is not a folder")
    if broker_user is not None and os.geteuid() == 0:
        chown(folder, broker_user)
        os.chmod(folder, 0o700)


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
    log_denied: bool = False,
) -> BrokerFiles:
    """Write the folder's config set; ``names`` are the hostnames/IPs agents reach the broker by.

    ``tls_bind`` limits the TLS listener to one address (all by default). ``local_port`` is the
    loopback listener the hub connects to (required: the hub has no account on the network).
    ``broker_user`` owns the files the broker must read when it drops root, and the persistence
    folder; ``hub_user`` owns the hub's credentials (the account ``coopwatt-hub run`` runs as).
    Both only matter when running as root. ``log_denied`` turns on Mosquitto's debug log, the
    only one in which 2.0 names the client of a refused publish (it logs every packet).
    """
    check_id(coop, "coop")
    if not names:
        raise ProvisionError("name at least one hostname or IP address agents use for the broker")
    hostnames, ips = _split_names(names)
    if local_port is None:
        raise ProvisionError(
            "the hub connects on the loopback listener, so --local-port cannot be 0"
        )
    for port in (tls_port, local_port):
        if not 1 <= port <= 65535:
            raise ProvisionError(f"port {port} is not 1 to 65535")
    if local_port == tls_port:
        raise ProvisionError("the TLS and the local listener need different ports")
    if tls_bind is not None:
        try:
            ipaddress.ip_address(tls_bind)
        except ValueError:
            raise ProvisionError(f"--bind {tls_bind!r} is not an IP address") from None
    if broker_user is not None:
        check_traversable(root, broker_user)
        check_traversable(persistence_dir, broker_user)
    layout = Layout(root)
    host = f"[{names[0]}]" if ":" in names[0] else names[0]  # an IPv6 address in a URL
    site = BrokerSite(
        coop=coop,
        public_url=f"mqtts://{host}:{tls_port}",
        tls_port=tls_port,
        local_port=local_port,
        broker_user=broker_user,
    )
    prepare_persistence(persistence_dir, broker_user)
    with locked(layout):
        # Whatever the umask, the broker's user must get in (its secrets in there are 0600).
        os.chmod(layout.root, 0o755)  # noqa: S103
        share_group = f"hub-{secrets.token_hex(14)}"
        if layout.settings.exists():
            old = BrokerSite.load(layout)
            if old.coop != coop:
                raise ProvisionError(
                    f"{root} is the broker of cooperative {old.coop!r}, not {coop!r}"
                )
            share_group = old.share_group or share_group
        site = dataclasses.replace(site, share_group=share_group)
        ca = layout.ca(coop)
        layout.certs.mkdir(parents=True, exist_ok=True)
        os.chmod(layout.certs, 0o755)  # noqa: S103  (server.key in it is 0600)
        server_crt, server_key = layout.certs / "server.crt", layout.certs / "server.key"
        issued_server = False
        if _server_names(server_crt) != set(hostnames) | set(ips) or not server_key.exists():
            issued = ca.issue_server(hostnames, ips)
            write_private(server_key, issued.key_pem)
            write_public(server_crt, issued.cert_pem)
            issued_server = True
        chown(server_key, broker_user)
        layout.publish_ca_files(ca)
        write_private(layout.settings, site.to_toml().encode())  # holds the share group
        passwords = PasswordFile(layout.passwd)
        passwords.save(broker_user)  # exists, 0600, owned by the broker, before it starts
        migrate_home_passwords(layout, site)

        new: list[str] = []
        accounts: dict[str, ClientFiles] = {}
        for user, owner, cert in ((HUB_USER, hub_user, False), (OPERATOR_USER, None, True)):
            files, created = ensure_service_account(layout, site, ca, user, owner, certificate=cert)
            accounts[user] = files
            if created:
                new.append(user)

        write_acls(layout, site)
        conf = render(
            data_path("firmware-configs", "mosquitto", "mosquitto.conf.template"),
            coop=coop,
            dir=root.resolve(),
            max_payload=MAX_PAYLOAD_BYTES,
            max_packet_size=MAX_PACKET_BYTES,
            persistence_dir=persistence_dir,
            tls_port=tls_port,
            tls_bind=tls_bind or "",
            local_port=local_port,
            debug_log="log_type debug\n" if log_denied else "",
        )
        write_public(layout.conf, conf.encode(), 0o644)

        hub_files, operator_files = accounts[HUB_USER], accounts[OPERATOR_USER]
        hub_config = hub_files.folder / "broker.toml"
        write_private(hub_config, _hub_table(site, hub_files).encode())
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


def _hub_table(site: BrokerSite, files: ClientFiles) -> str:
    """The hub's ``[broker]`` table: the loopback listener, by password."""
    return (
        "[broker]\n"
        f'url = "mqtt://127.0.0.1:{site.local_port}"\n'
        f'username = "{HUB_USER}"\n'
        f'password_file = "{files.password}"\n'
        '# Scale-out (README, "Growing"): take readings through a shared subscription, so\n'
        "# that ingest workers can share them. The group's name is this cooperative's secret:\n"
        "# Mosquitto lets any client join a group it can name, and hands it a share.\n"
        f'# shared_group = "{site.share_group}"\n'
    )


def _client_table(site: BrokerSite, user: str, files: ClientFiles) -> str:
    """A ``[broker]`` table for the operator: the network listener, by certificate (its
    common name is the account; the username is sent for brokers that check it)."""
    lines = [
        "[broker]",
        f'url = "{site.public_url}"',
        f'ca_file = "{files.ca}"',
        f'cert_file = "{files.cert}"',
        f'key_file = "{files.key}"',
        f'username = "{user}"',
        f'password_file = "{files.password}"',
    ]
    return "\n".join(lines) + "\n"

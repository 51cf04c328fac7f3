"""Provisioning homes on the cooperative's broker: credentials, certificates, agent config, bundle.

``coopwatt-hub provision HOME`` gives a home a client certificate from the cooperative's CA
whose common name is the home id, a block in the network listener's ACLs (see
``firmware-configs/mosquitto/acl-home.template``), an agent config pointing at the broker, and a
first-boot bundle for Raspberry Pi OS that installs the agent. On the network listener the
certificate is the login: Mosquitto takes its common name as the username and as the client id,
so the home can write only its own ``readings/status/consent/appliances/feedback``, read only
its own ``ack/prompts/statement/receipts``, and never take another client's id. ``deprovision``
revokes the certificate and removes the ACL block; the broker applies both on reload (SIGHUP):
the home cannot connect again, and a connection it still holds can neither send nor receive.

The home also gets a password (in its bundle, as before; the hash is kept in ``passwd-homes``,
which Mosquitto does not read: it cannot check a password and bind the certificate to the
account at once, so the certificate alone is checked). Home ids go into ACL lines and topics, so
a name that could escape its topic level (``+``, ``#``, ``/``, NUL, spaces, upper case, ...) is
refused: they match ``[a-z0-9][a-z0-9-]{0,31}``. Service accounts (the hub, the operator) start
with ``_``, so no home can ever take a service's name.

Secrets: passwords are generated here, written once into the bundle (mode 0600) and kept on the
hub only as PBKDF2 hashes; they are never printed nor logged.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import hmac
import json
import logging
import os
import pwd
import secrets
import shutil
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from string import Template
from typing import Any, Final

from hub.ops.pki import CertificateAuthority, cert_serial, write_private, write_public
from protocol.clock import Clock, SystemClock
from protocol.topics import ID_RE

log = logging.getLogger(__name__)

# Mosquitto 2's "$7$" format: PBKDF2-HMAC-SHA512, 12-byte salt, 64-byte hash, base64. 101
# iterations is mosquitto_passwd's own default; the passwords are 192-bit random tokens, so
# iterations would add nothing but CPU on every CONNECT (and on every reload, for every client).
HASH_ITERATIONS: Final = 101
SALT_BYTES: Final = 12
HUB_USER: Final = "_hub"
OPERATOR_USER: Final = "_operator"
SERVICE_USERS: Final = (HUB_USER, OPERATOR_USER)
# Outside any checkout (secrets must not land in a working tree) and beside the hub's data.
DEFAULT_BUNDLES: Final = Path("/var/lib/coopwatt/bundles")


class ProvisionError(Exception):
    """Provisioning cannot proceed; the message says why in one sentence."""


def check_home_id(home: str) -> str:
    """A home id usable as an MQTT username inside topic patterns, or :class:`ProvisionError`."""
    if ID_RE.fullmatch(home):
        return home
    bad = sorted({c for c in home if c in "+#/\0 $*%:" or not c.isprintable()})
    shown = ", ".join(repr(c) for c in bad)
    why = f" ({shown} could escape its topic level)" if bad else ""
    raise ProvisionError(
        f"home id {home!r} is not allowed{why}: use 1-32 of a-z, 0-9 and '-', "
        "starting with a letter or digit"
    )


# -- Mosquitto password file ------------------------------------------------------------------


def hash_password(
    password: str, *, iterations: int = HASH_ITERATIONS, salt: bytes | None = None
) -> str:
    """The ``$7$`` hash Mosquitto 2 (and ``mosquitto_passwd``) write for ``password``."""
    salt = salt if salt is not None else secrets.token_bytes(SALT_BYTES)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode("utf-8"), salt, iterations)
    b64 = base64.b64encode
    return f"$7${iterations}${b64(salt).decode()}${b64(digest).decode()}"


def verify_password(password: str, hashed: str) -> bool:
    """True when ``password`` matches a ``$7$`` hash."""
    try:
        _, kind, iterations, salt, digest = hashed.split("$")
        if kind != "7":
            return False
        expected = base64.b64decode(digest, validate=True)
        got = hashlib.pbkdf2_hmac(
            "sha512", password.encode("utf-8"), base64.b64decode(salt, validate=True),
            int(iterations),
        )  # fmt: skip
    except ValueError:
        return False
    return hmac.compare_digest(expected, got)


def new_password() -> str:
    return secrets.token_urlsafe(24)


class PasswordFile:
    """Mosquitto's ``username:hash`` lines; comments and unknown lines are kept as they are."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lines: list[str] = []
        if path.exists():
            self.lines = [ln for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]

    def users(self) -> list[str]:
        return [
            line.split(":", 1)[0]
            for line in self.lines
            if ":" in line and not line.lstrip().startswith("#")
        ]

    def get(self, user: str) -> str | None:
        for line in self.lines:
            name, sep, hashed = line.partition(":")
            if sep and name == user:
                return hashed
        return None

    def set(self, user: str, hashed: str) -> None:
        if ":" in user or "\n" in user:
            raise ProvisionError(f"username {user!r} cannot go into a password file")
        entry = f"{user}:{hashed}"
        for i, line in enumerate(self.lines):
            if line.partition(":")[0] == user and ":" in line:
                self.lines[i] = entry
                return
        self.lines.append(entry)

    def remove(self, user: str) -> bool:
        before = len(self.lines)
        self.lines = [
            line for line in self.lines if not (":" in line and line.partition(":")[0] == user)
        ]
        return len(self.lines) != before

    def save(self, owner: str | None = None) -> None:
        write_private(self.path, "".join(f"{line}\n" for line in self.lines).encode("utf-8"))
        chown(self.path, owner)


def chown(path: Path, owner: str | None) -> None:
    """Hand a 0600 file to the broker's user, so Mosquitto can read it after dropping root."""
    if owner is None or os.geteuid() != 0:
        return
    try:
        entry = pwd.getpwnam(owner)
    except KeyError:
        raise ProvisionError(f"user {owner!r} does not exist; pass --broker-user") from None
    os.chown(path, entry.pw_uid, entry.pw_gid)


def user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def default_broker_user() -> str | None:
    """``mosquitto`` when running as root on a machine that has that user, else nobody."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam("mosquitto")
    except KeyError:
        return None
    return "mosquitto"


# -- where things live -------------------------------------------------------------------------


def data_path(*parts: str) -> Path:
    """A file shipped in the source tree (templates, units): ``$COOPWATT_DATA`` or the checkout."""
    base = os.environ.get("COOPWATT_DATA")
    candidates = [Path(base)] if base else []
    candidates += [Path(__file__).resolve().parents[2], Path("/usr/share/coopwatt")]
    for root in candidates:
        path = root.joinpath(*parts)
        if path.exists():
            return path
    raise ProvisionError(f"{'/'.join(parts)} not found (set COOPWATT_DATA to the source tree)")


def render(template: Path, **values: object) -> str:
    try:
        return Template(template.read_text(encoding="utf-8")).substitute(
            {k: str(v) for k, v in values.items()}
        )
    except KeyError as exc:
        raise ProvisionError(f"{template}: no value for ${{{exc.args[0]}}}") from None


@dataclass(frozen=True)
class Layout:
    """The broker folder ``broker-config`` writes and ``provision`` keeps up to date."""

    root: Path

    @property
    def settings(self) -> Path:
        return self.root / "broker.toml"

    @property
    def conf(self) -> Path:
        return self.root / "mosquitto.conf"

    @property
    def passwd(self) -> Path:
        return self.root / "passwd"  # the loopback listener's accounts: the hub and the operator

    @property
    def home_passwd(self) -> Path:
        return self.root / "passwd-homes"  # homes' password hashes; Mosquitto does not read it

    @property
    def acl(self) -> Path:
        return self.root / "acl"  # the network listener: the operator and every home

    @property
    def acl_local(self) -> Path:
        return self.root / "acl-local"  # the loopback listener: the hub and the operator

    @property
    def certs(self) -> Path:
        return self.root / "certs"  # what the broker reads: ca.crt, crl.pem, server.crt/.key

    @property
    def ca_dir(self) -> Path:
        return self.root / "ca"  # the CA's key: root only

    @property
    def registry(self) -> Path:
        return self.root / "homes.json"

    @property
    def clients(self) -> Path:
        return self.root / "clients"  # service accounts' credentials (hub, operator)

    def ca(self, coop: str) -> CertificateAuthority:
        return CertificateAuthority.open_or_create(self.ca_dir, coop)

    def publish_ca_files(self, ca: CertificateAuthority) -> None:
        """Copy the CA certificate and CRL where the broker (not root) can read them."""
        write_public(self.certs / "ca.crt", ca.cert_pem)
        write_public(self.certs / "crl.pem", ca.crl_path.read_bytes())


@dataclass(frozen=True)
class BrokerSite:
    """What ``broker-config`` decided and ``provision`` needs: ``broker.toml`` in the folder."""

    coop: str
    public_url: str  # what agents connect to: mqtts://host:port
    tls_port: int
    local_port: int | None
    broker_user: str | None
    # The hub's shared-subscription group for scale-out: a per-cooperative secret, because
    # Mosquitto 2.0 lets any client join any group (it checks no subscription against the ACLs)
    # and then hands it its share of the readings, which a home may not read and so drops.
    share_group: str | None = None

    def to_toml(self) -> str:
        lines = [
            "# Written by `coopwatt-hub broker-config`; provision reads it.",
            f'coop = "{self.coop}"',
            f'public_url = "{self.public_url}"',
            f"tls_port = {self.tls_port}",
        ]
        if self.local_port is not None:
            lines.append(f"local_port = {self.local_port}")
        if self.broker_user is not None:
            lines.append(f'broker_user = "{self.broker_user}"')
        if self.share_group is not None:
            lines.append(f'share_group = "{self.share_group}"')
        return "\n".join(lines) + "\n"

    @classmethod
    def load(cls, layout: Layout) -> BrokerSite:
        try:
            data = tomllib.loads(layout.settings.read_text(encoding="utf-8"))
            return cls(
                coop=str(data["coop"]),
                public_url=str(data["public_url"]),
                tls_port=int(data["tls_port"]),
                local_port=int(data["local_port"]) if "local_port" in data else None,
                broker_user=str(data["broker_user"]) if "broker_user" in data else None,
                share_group=str(data["share_group"]) if "share_group" in data else None,
            )
        except FileNotFoundError:
            raise ProvisionError(
                f"{layout.settings} is missing: run `coopwatt-hub broker-config` first"
            ) from None
        except (OSError, ValueError, KeyError, tomllib.TOMLDecodeError) as exc:
            raise ProvisionError(f"{layout.settings} cannot be used: {exc}") from None


@contextlib.contextmanager
def locked(layout: Layout) -> Iterator[None]:
    """One provisioning command at a time per broker folder."""
    layout.root.mkdir(parents=True, exist_ok=True)
    with (layout.root / ".lock").open("a") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def read_registry(layout: Layout) -> dict[str, dict[str, Any]]:
    if not layout.registry.exists():
        return {}
    data = json.loads(layout.registry.read_text(encoding="utf-8"))
    return dict(data.get("homes", {}))


def write_registry(layout: Layout, homes: dict[str, dict[str, Any]]) -> None:
    text = json.dumps({"homes": dict(sorted(homes.items()))}, indent=2) + "\n"
    write_public(layout.registry, text.encode("utf-8"), 0o640)


# -- service accounts ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ClientFiles:
    """A client's credentials on disk: ``password`` and ``client.key`` mode 0600."""

    folder: Path

    @property
    def password(self) -> Path:
        return self.folder / "password"

    @property
    def ca(self) -> Path:
        return self.folder / "ca.crt"

    @property
    def cert(self) -> Path:
        return self.folder / "client.crt"

    @property
    def key(self) -> Path:
        return self.folder / "client.key"


def write_client(
    folder: Path, ca: CertificateAuthority, user: str, password: str, owner: str | None = None
) -> tuple[ClientFiles, int]:
    """Write a client's password, CA certificate, client certificate and key; returns the serial."""
    files = ClientFiles(folder)
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    issued = ca.issue_client(user)
    write_private(files.password, (password + "\n").encode("utf-8"))
    write_private(files.key, issued.key_pem)
    write_public(files.cert, issued.cert_pem)
    write_public(files.ca, ca.cert_pem)
    for path in (folder, files.password, files.key):
        chown(path, owner)
    return files, issued.serial


def ensure_service_account(
    layout: Layout,
    site: BrokerSite,
    ca: CertificateAuthority,
    user: str,
    owner: str | None = None,
    *,
    certificate: bool = True,
) -> tuple[ClientFiles, bool]:
    """The hub's or the operator's account; created once, kept on later runs. True if new.

    Without ``certificate`` (the hub: loopback only) the account is a password, and a
    certificate an earlier version issued for it is revoked and deleted, so that nothing can
    present the account's name on the network listener.
    """
    files = ClientFiles(layout.clients / user.lstrip("_"))
    passwords = PasswordFile(layout.passwd)
    if not certificate:
        _drop_certificate(layout, ca, files)
    have = files.password.exists() and (
        not certificate or (files.cert.exists() and files.key.exists())
    )
    if have and passwords.get(user) is not None:
        if certificate and (not files.ca.exists() or files.ca.read_bytes() != ca.cert_pem):
            write_public(files.ca, ca.cert_pem)
        for path in (files.folder, files.password, files.key):
            if path.exists():
                chown(path, owner)
        return files, False
    password = new_password()
    if certificate:
        files, _ = write_client(files.folder, ca, user, password, owner)
    else:
        files.folder.mkdir(parents=True, exist_ok=True)
        os.chmod(files.folder, 0o700)
        write_private(files.password, (password + "\n").encode("utf-8"))
        for path in (files.folder, files.password):
            chown(path, owner)
    passwords.set(user, hash_password(password))
    passwords.save(site.broker_user)
    return files, True


def _drop_certificate(layout: Layout, ca: CertificateAuthority, files: ClientFiles) -> None:
    if files.cert.exists():
        ca.revoke(cert_serial(files.cert.read_bytes()))
        layout.publish_ca_files(ca)
    for path in (files.cert, files.key, files.ca):
        path.unlink(missing_ok=True)


def write_acls(layout: Layout, site: BrokerSite) -> None:
    """Both listeners' ACL files: the network one with a block for every provisioned home."""
    home_block = data_path("firmware-configs", "mosquitto", "acl-home.template")
    homes = "\n".join(
        render(home_block, coop=site.coop, home=check_home_id(home))
        for home in sorted(read_registry(layout))
    )
    names = {"coop": site.coop, "hub_user": HUB_USER, "operator_user": OPERATOR_USER}
    acl = render(data_path("firmware-configs", "mosquitto", "acl.template"), homes=homes, **names)
    write_public(layout.acl, acl.encode(), 0o644)
    local = render(data_path("firmware-configs", "mosquitto", "acl-local.template"), **names)
    write_public(layout.acl_local, local.encode(), 0o644)


def migrate_home_passwords(layout: Layout, site: BrokerSite) -> None:
    """Move homes' hashes out of the loopback listener's password file (older versions kept
    them there, where they would let a home log in on loopback)."""
    passwords = PasswordFile(layout.passwd)
    moved = [user for user in passwords.users() if user not in SERVICE_USERS]
    if not moved:
        return
    homes = PasswordFile(layout.home_passwd)
    for user in moved:
        hashed = passwords.get(user)
        if hashed is not None and homes.get(user) is None:
            homes.set(user, hashed)
        passwords.remove(user)
    homes.save()
    passwords.save(site.broker_user)


# -- homes ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Provisioned:
    home: str
    bundle: Path  # folder holding user-data, coopwatt/ and README.txt
    serial: int
    rotated: bool


def _devices_text(devices_file: Path | None) -> str:
    """The ``[[devices]]`` tables of ``devices_file``, checked for shape and copied as written."""
    if devices_file is None:
        return (
            "# Devices: find them with `coopwatt-agent scan --modbus tcp://192.168.1.50:502`, add\n"
            "# one [[devices]] table each, then run `coopwatt-agent check` and\n"
            "# `sudo systemctl restart coopwatt-agent`.\n"
            "# [[devices]]\n"
            '# name = "grid-meter"\n'
            '# profile = "eastron-sdm630"\n'
            '# modbus = "tcp://192.168.1.50:502"\n'
            "# unit = 1\n"
        )
    try:
        text = devices_file.read_text(encoding="utf-8")
        data = tomllib.loads(text)
    except (OSError, UnicodeDecodeError) as exc:
        raise ProvisionError(f"cannot read {devices_file}: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ProvisionError(f"{devices_file} is not valid TOML: {exc}") from None
    devices = data.get("devices")
    if set(data) != {"devices"} or not isinstance(devices, list) or not devices:
        raise ProvisionError(f"{devices_file} must hold [[devices]] tables and nothing else")
    for i, table in enumerate(devices, 1):
        if not isinstance(table, dict) or not isinstance(table.get("name"), str):
            raise ProvisionError(f"{devices_file}: devices[{i}] needs a name")
    return text if text.endswith("\n") else text + "\n"


def agent_config(site: BrokerSite, home: str, devices: str) -> str:
    return render(
        data_path("firmware-configs", "firstboot", "agent.toml.template"),
        coop=site.coop,
        home=home,
        broker_url=site.public_url,
        devices=devices,
    )


def provision_home(
    layout: Layout,
    home: str,
    out_dir: Path,
    *,
    devices_file: Path | None = None,
    agent_package: str = "coopwatt[agent,web]",
    wheel: Path | None = None,
    rotate: bool = False,
    clock: Clock | None = None,
) -> Provisioned:
    """Create ``home``'s account, certificate, agent config and first-boot bundle.

    Refuses a home that is already provisioned unless ``rotate`` (new password and certificate,
    the old certificate revoked). The broker must be reloaded afterwards to take the account.
    """
    check_home_id(home)
    devices = _devices_text(devices_file)
    if wheel is not None and not wheel.is_file():
        raise ProvisionError(f"wheel {wheel} does not exist")
    clock = clock or SystemClock()
    with locked(layout):
        site = BrokerSite.load(layout)
        registry = read_registry(layout)
        passwords = PasswordFile(layout.home_passwd)
        existing = registry.get(home)
        if (existing is not None or passwords.get(home) is not None) and not rotate:
            raise ProvisionError(
                f"home {home!r} is already provisioned: pass --rotate for new credentials "
                "or deprovision it first"
            )
        ca = layout.ca(site.coop)
        if not out_dir.exists():
            out_dir.mkdir(parents=True, mode=0o700)  # bundles hold passwords and keys
        bundle = out_dir / home
        if bundle.exists():
            shutil.rmtree(bundle)
        bundle.mkdir(parents=True)
        os.chmod(bundle, 0o700)
        files_dir = bundle / "coopwatt"
        password = new_password()
        files, serial = write_client(files_dir, ca, home, password)
        os.rename(files.password, files_dir / "agent.password")
        write_private(files_dir / "agent.toml", agent_config(site, home, devices).encode())
        code = household_code()
        write_private(files_dir / "household-code", f"{code}\n".encode())
        _write_bundle(bundle, home, site, agent_package, wheel, code)
        # The broker's side last: an interrupted run leaves no account without its bundle.
        if existing is not None and "serial" in existing:
            ca.revoke(int(existing["serial"], 16))
        layout.publish_ca_files(ca)
        passwords.set(home, hash_password(password))
        passwords.save()
        registry[home] = {
            "serial": f"{serial:x}",
            "provisioned_ms": clock.now_ms(),
        }
        write_registry(layout, registry)
        write_acls(layout, site)
    log.info("provisioned home=%s bundle=%s rotated=%s", home, bundle, existing is not None)
    return Provisioned(home, bundle, serial, existing is not None)


@dataclass(frozen=True)
class Deprovisioned:
    home: str
    removed_account: bool
    revoked_serial: int | None


def deprovision_home(layout: Layout, home: str) -> Deprovisioned:
    """Remove ``home``'s broker account and revoke its certificate (effective on reload)."""
    check_home_id(home)
    with locked(layout):
        site = BrokerSite.load(layout)
        registry = read_registry(layout)
        passwords = PasswordFile(layout.home_passwd)
        entry = registry.pop(home, None)
        removed = passwords.remove(home)
        service = PasswordFile(layout.passwd)  # an older version's entry, if any
        if service.remove(home):
            service.save(site.broker_user)
            removed = True
        if entry is None and not removed:
            raise ProvisionError(f"home {home!r} is not provisioned")
        serial: int | None = None
        if entry is not None and "serial" in entry:
            serial = int(entry["serial"], 16)
            ca = layout.ca(site.coop)
            ca.revoke(serial)
            layout.publish_ca_files(ca)
        passwords.save()
        write_registry(layout, registry)
        write_acls(layout, site)
    log.info("deprovisioned home=%s", home)
    return Deprovisioned(home, removed, serial)


def provisioned_homes(layout: Layout) -> dict[str, dict[str, Any]]:
    return read_registry(layout)


# -- the first-boot bundle ----------------------------------------------------------------------


def household_code() -> str:
    """The household page's one-time code for its first visit: 12 characters a person reads off
    a sheet and types (no 0/O or 1/I), in groups of four, 60 bits. The page
    (``agent/web/household.py``) compares it ignoring case, spaces and hyphens, and deletes it
    once the household has chosen its password."""
    raw = "".join(secrets.choice(_CODE_ALPHABET) for _ in range(12))
    return "-".join(raw[i : i + 4] for i in range(0, 12, 4))


_CODE_ALPHABET: Final = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"


def _write_bundle(
    bundle: Path, home: str, site: BrokerSite, agent_package: str, wheel: Path | None, code: str
) -> None:
    files = bundle / "coopwatt"
    if wheel is not None:  # installed from the bundle's folder instead of the package index
        shutil.copy2(wheel, files / wheel.name)
    write_public(
        files / "firstboot.env",
        render(
            data_path("firmware-configs", "firstboot", "firstboot.env.template"),
            home=home,
            coop=site.coop,
            package=_shell_quote(agent_package),
            wheel=_shell_quote(wheel.name if wheel is not None else ""),
        ).encode(),
    )
    for name in ("firstboot.sh", "firstrun.sh"):
        write_public(
            files / name, data_path("firmware-configs", "firstboot", name).read_bytes(), 0o755
        )
    write_public(
        files / "coopwatt-firstboot.service",
        data_path("firmware-configs", "firstboot", "coopwatt-firstboot.service").read_bytes(),
    )
    for unit in ("coopwatt-agent.service", "coopwatt-agent-web.service"):
        write_public(files / unit, data_path("systemd", unit).read_bytes())
    write_private(bundle / "user-data", cloud_init_user_data(files).encode())
    write_public(
        bundle / "README.txt",
        render(
            data_path("firmware-configs", "firstboot", "README.txt.template"),
            home=home,
            coop=site.coop,
        ).encode(),
    )
    # For the household: the page's address and its first-visit code (the only copy besides
    # the Pi's, which the page deletes once used). Private, as the code opens the home's page.
    write_private(
        bundle / "household.txt",
        render(
            data_path("firmware-configs", "firstboot", "household.txt.template"),
            home=home,
            coop=site.coop,
            code=code,
        ).encode(),
    )


def _shell_quote(text: str) -> str:
    return "'" + text.replace("'", "'\"'\"'") + "'"


# Files cloud-init writes, with their modes; secrets 0600.
_BUNDLE_MODES: Final = {
    "agent.toml": "0600",
    "agent.password": "0600",
    "client.key": "0600",
    "client.crt": "0644",
    "ca.crt": "0644",
    "firstboot.env": "0644",
    "firstboot.sh": "0755",
    "coopwatt-agent.service": "0644",
    "household-code": "0600",
    "coopwatt-agent-web.service": "0644",
}


def cloud_init_user_data(files: Path) -> str:
    """``#cloud-config`` that stages the bundle in /var/lib/coopwatt-firstboot and runs it.

    For Raspberry Pi OS images that boot with cloud-init: everything is embedded (base64), so
    the one ``user-data`` file on the boot partition is the whole bundle. A wheel, if any, is
    left out (too big): such images install ``coopwatt[agent]`` from the package index.
    """
    stage = "/var/lib/coopwatt-firstboot"
    lines = [
        "#cloud-config",
        "# coopwatt first boot: stage the agent's config and credentials, then install the agent.",
        "# Generated by `coopwatt-hub provision`; holds secrets: keep it off shared drives.",
        "write_files:",
    ]
    for name, mode in _BUNDLE_MODES.items():
        content = base64.b64encode((files / name).read_bytes()).decode()
        lines += [
            f"  - path: {stage}/{name}",
            "    owner: root:root",
            f"    permissions: '{mode}'",
            "    encoding: b64",
            f"    content: {content}",
        ]
    lines += [
        "runcmd:",
        f"  - [bash, {stage}/firstboot.sh]",
    ]
    return "\n".join(lines) + "\n"

"""The cooperative's own certificate authority: broker server certificate, client certificates, CRL.

Agents and the hub talk to the broker over TLS. The cooperative runs a small private CA (an
ECDSA P-256 key kept on the hub, readable by root only) that signs the broker's server
certificate and one client certificate per home, whose common name is the home id. A home that is
deprovisioned is added to the certificate revocation list the broker checks, so a copied SD card
is useless once the home is revoked. Built on ``cryptography`` (the ``ops`` extra).

Keys are written mode 0600 and never logged; certificates and the CRL are public.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_DAYS: Final = 20 * 365  # a cooperative's CA outlives its hardware
SERVER_DAYS: Final = 5 * 365
CLIENT_DAYS: Final = 10 * 365  # a Pi in a meter cupboard is not re-commissioned often
# A CRL past its next update makes OpenSSL refuse EVERY client, and the broker reads only this
# local file, so freshness buys nothing here: it is valid as long as the CA and re-signed on change.
CRL_DAYS: Final = CA_DAYS


class PkiError(Exception):
    """The CA files cannot be used; the message says which and why."""


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def write_private(path: Path, data: bytes) -> None:
    """Write a secret atomically, mode 0600 from the first byte (never briefly world-readable)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.chmod(tmp, 0o600)  # the umask cannot widen it, but an odd one could narrow it
    os.replace(tmp, path)


def write_public(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write a non-secret file atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _name(common_name: str, org: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, org),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


@dataclass(frozen=True)
class Issued:
    """A certificate and its key, as PEM."""

    cert_pem: bytes
    key_pem: bytes = b""  # repr would show the key: keep it out of logs by never printing this
    serial: int = 0

    def __repr__(self) -> str:
        return f"Issued(serial={self.serial})"


class CertificateAuthority:
    """The CA in ``folder``: ``ca.key`` (0600), ``ca.crt``, ``crl.pem`` and ``revoked``."""

    def __init__(self, folder: Path, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate):
        self.folder = folder
        self.key = key
        self.cert = cert

    @property
    def cert_path(self) -> Path:
        return self.folder / "ca.crt"

    @property
    def crl_path(self) -> Path:
        return self.folder / "crl.pem"

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @classmethod
    def open_or_create(cls, folder: Path, coop: str) -> CertificateAuthority:
        """Load the CA in ``folder``, or create one named for ``coop`` (and an empty CRL)."""
        key_path, cert_path = folder / "ca.key", folder / "ca.crt"
        if key_path.exists() or cert_path.exists():
            return cls.open(folder)
        folder.mkdir(parents=True, exist_ok=True)
        os.chmod(folder, 0o700)
        key = ec.generate_private_key(ec.SECP256R1())
        name = _name(f"coopwatt {coop} CA", f"coopwatt {coop}")
        now = _now()
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=CA_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .sign(key, hashes.SHA256())
        )
        write_private(key_path, _key_pem(key))
        write_public(cert_path, cert.public_bytes(serialization.Encoding.PEM))
        ca = cls(folder, key, cert)
        ca.write_crl()
        return ca

    @classmethod
    def open(cls, folder: Path) -> CertificateAuthority:
        key_path, cert_path = folder / "ca.key", folder / "ca.crt"
        try:
            key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
            cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        except FileNotFoundError as exc:
            raise PkiError(f"{exc.filename}: missing; the CA in {folder} is incomplete") from None
        except (OSError, ValueError) as exc:
            raise PkiError(f"cannot load the CA in {folder}: {type(exc).__name__}") from None
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise PkiError(f"{key_path} is not an EC key")
        return cls(folder, key, cert)

    def _issue(
        self,
        common_name: str,
        days: int,
        usage: x509.ObjectIdentifier,
        sans: list[x509.GeneralName] | None = None,
    ) -> Issued:
        key = ec.generate_private_key(ec.SECP256R1())
        now = _now()
        serial = x509.random_serial_number()
        org = self.cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name, str(org)))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(serial)
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=True,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), False
            )
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        return Issued(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key), serial)

    def issue_server(self, hostnames: list[str], ips: list[str]) -> Issued:
        """The broker's certificate, valid for every name and address agents use to reach it."""
        if not hostnames and not ips:
            raise PkiError("the broker certificate needs at least one hostname or IP address")
        sans: list[x509.GeneralName] = [x509.DNSName(h) for h in hostnames]
        try:
            sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
        except ValueError as exc:
            raise PkiError(str(exc)) from None
        cn = hostnames[0] if hostnames else ips[0]
        return self._issue(cn, SERVER_DAYS, ExtendedKeyUsageOID.SERVER_AUTH, sans)

    def issue_client(self, common_name: str) -> Issued:
        """A client certificate whose common name is the MQTT username it goes with."""
        return self._issue(common_name, CLIENT_DAYS, ExtendedKeyUsageOID.CLIENT_AUTH)

    # -- revocation ---------------------------------------------------------------------------

    @property
    def _revoked_path(self) -> Path:
        return self.folder / "revoked"

    def revoked_serials(self) -> list[int]:
        if not self._revoked_path.exists():
            return []
        return [int(line, 16) for line in self._revoked_path.read_text().split() if line]

    def revoke(self, serial: int) -> None:
        """Add ``serial`` to the CRL (idempotent) and re-sign it."""
        serials = self.revoked_serials()
        if serial not in serials:
            serials.append(serial)
            write_public(self._revoked_path, "".join(f"{s:x}\n" for s in serials).encode())
        self.write_crl()

    def write_crl(self) -> None:
        now = _now()
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(self.cert.subject)
            .last_update(now - dt.timedelta(minutes=5))
            .next_update(now + dt.timedelta(days=CRL_DAYS))
        )
        for serial in self.revoked_serials():
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder()
                .serial_number(serial)
                .revocation_date(now - dt.timedelta(minutes=5))
                .build()
            )
        crl = builder.sign(self.key, hashes.SHA256())
        write_public(self.crl_path, crl.public_bytes(serialization.Encoding.PEM))


def cert_serial(cert_pem: bytes) -> int:
    return x509.load_pem_x509_certificate(cert_pem).serial_number


def cert_common_name(cert_pem: bytes) -> str:
    cert = x509.load_pem_x509_certificate(cert_pem)
    return str(cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)


def cert_expires_ms(cert_pem: bytes) -> int:
    cert = x509.load_pem_x509_certificate(cert_pem)
    return int(cert.not_valid_after_utc.timestamp() * 1000)

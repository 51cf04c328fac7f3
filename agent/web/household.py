"""The household's secret: the one-time setup code and the password's scrypt hash.

The installer's bundle writes a one-time code to ``data_dir/household-code`` (one line, 0600;
``coopwatt-agent web new-code`` writes a fresh one). On the first visit the household types it
with a new password; the page keeps only the password's scrypt hash (``data_dir/web/
household.json``, 0600) and deletes the code. A household that lost its password asks for a new
code the same way and sets a new password with it, which signs every browser out.

Codes and passwords are never logged. scrypt's cost is modest (8 MiB, ``N`` = 2^13) because the
page must stay small on a Pi Zero; one check runs at a time, and wrong guesses are slowed down
by :mod:`agent.web.throttle` anyway.

The page's own process keeps OpenSSL out of its memory (``python -m agent.web``: 3.4 MiB of a
30 MiB budget), so there ``hashlib`` has no ``scrypt``: the hash is then worked out by a
short-lived helper (the same interpreter, isolated, ``hashlib.scrypt``), which is handed the
password on its standard input, never on its command line.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import subprocess
import sys
import threading
import unicodedata
from pathlib import Path
from typing import Final

CODE_ALPHABET: Final = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # no 0/O, 1/I: read off a sheet
CODE_LENGTH: Final = 12
MIN_PASSWORD: Final = 8
MAX_PASSWORD: Final = 256  # characters: a bound on the work one attempt costs
MAX_CODE_FILE: Final = 256  # bytes read of the code file
SCRYPT_N: Final = 2**13
SCRYPT_R: Final = 8
SCRYPT_P: Final = 1
SCRYPT_MAXMEM: Final = 16 * 1024 * 1024


def new_code() -> str:
    """A fresh code, in groups of four: ``ABCD-EFGH-JKLM`` (60 bits)."""
    raw = "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))
    return "-".join(raw[i : i + 4] for i in range(0, CODE_LENGTH, 4))


def normalise_code(text: str) -> str:
    """What is compared: upper case, without spaces and hyphens (as people type it)."""
    return "".join(c for c in text.upper() if c not in " -\t\r\n")


def write_secret(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` (mode 0600), atomically and durably."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def write_code(path: Path) -> str:
    """A fresh one-time code, written to ``path``; returned for the installer to print."""
    code = new_code()
    write_secret(path, (code + "\n").encode())
    return code


def password_problem(password: str) -> str | None:
    """Why ``password`` cannot be used (a message id), or None."""
    if len(password) < MIN_PASSWORD:
        return "The password needs at least 8 characters."
    if len(password) > MAX_PASSWORD:
        return "The password may have at most 256 characters."
    if any(unicodedata.category(c) == "Cc" for c in password):
        return "The password may not contain control characters."
    return None


# The helper: reads "n r p dklen salt-hex" and a line holding the password's UTF-8 bytes as hex.
_HELPER: Final = (
    "import hashlib, sys\n"
    "n, r, p, dklen, salt = sys.stdin.readline().split()\n"
    "secret = bytes.fromhex(sys.stdin.readline().strip())\n"
    "key = hashlib.scrypt(secret, salt=bytes.fromhex(salt), n=int(n), r=int(r), p=int(p),\n"
    f"                     maxmem={SCRYPT_MAXMEM}, dklen=int(dklen))\n"
    "sys.stdout.write(key.hex())\n"
)
HELPER_TIMEOUT_S: Final = 60.0


def scrypt_in_helper(secret: bytes, salt: bytes, n: int, r: int, p: int, dklen: int) -> bytes:
    """``hashlib.scrypt`` worked out by a helper process (see the module's docstring)."""
    message = f"{n} {r} {p} {dklen} {salt.hex()}\n{secret.hex()}\n".encode()
    done = subprocess.run(
        [sys.executable, "-I", "-S", "-c", _HELPER], input=message, capture_output=True,
        timeout=HELPER_TIMEOUT_S, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise ValueError("the scrypt helper failed")  # its message would not help a member
    return bytes.fromhex(done.stdout.decode())


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    data = unicodedata.normalize("NFC", password).encode()
    scrypt = getattr(hashlib, "scrypt", None)
    if scrypt is None:  # the page's own process, without OpenSSL
        return scrypt_in_helper(data, salt, n, r, p, 32)
    key: bytes = scrypt(data, salt=salt, n=n, r=r, p=p, maxmem=SCRYPT_MAXMEM, dklen=32)
    return key


class Household:
    def __init__(self, code_path: Path, secret_path: Path) -> None:
        self.code_path = code_path
        self.secret_path = secret_path
        self._lock = threading.Lock()  # one scrypt at a time: 8 MiB each

    def has_password(self) -> bool:
        return self.secret_path.exists()

    def has_code(self) -> bool:
        return self.code_path.exists()

    def check_code(self, typed: str) -> bool:
        try:
            with self.code_path.open("rb") as f:
                stored = f.read(MAX_CODE_FILE).decode("utf-8", "replace")
        except OSError:
            return False
        want = normalise_code(stored.splitlines()[0] if stored else "")
        got = normalise_code(typed)
        return bool(want) and hmac.compare_digest(want.encode(), got.encode())

    def set_password(self, password: str) -> None:
        """Keep ``password``'s hash and delete the used code."""
        salt = secrets.token_bytes(16)
        with self._lock:
            digest = _scrypt(password, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)
        record = {
            "kdf": "scrypt", "n": SCRYPT_N, "r": SCRYPT_R, "p": SCRYPT_P,
            "salt": base64.b64encode(salt).decode(), "hash": base64.b64encode(digest).decode(),
        }  # fmt: skip
        write_secret(self.secret_path, json.dumps(record).encode())
        self.code_path.unlink(missing_ok=True)

    def check_password(self, typed: str) -> bool:
        if len(typed) > MAX_PASSWORD:
            return False
        try:
            record = json.loads(self.secret_path.read_bytes())
            salt = base64.b64decode(record["salt"])
            want = base64.b64decode(record["hash"])
            n, r, p = int(record["n"]), int(record["r"]), int(record["p"])
        except (OSError, ValueError, KeyError, TypeError):
            return False
        with self._lock:
            try:
                got = _scrypt(typed, salt, n, r, p)
            except ValueError:  # parameters beyond maxmem: a damaged file
                return False
        return hmac.compare_digest(want, got)

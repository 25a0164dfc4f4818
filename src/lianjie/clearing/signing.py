"""The platform's Ed25519 signing key for tree heads.

Generated on first use as ``$LIANJIE_HOME/clearing_ed25519.pem`` (readable by its owner only);
partners get the public key (``lianjie clearing public-key``) once, out of band, and check every
signed head against it. The key id is the first 16 bytes of SHA-256 of the raw public key, hex.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from lianjie.errors import ConfigError

KEY_FILE = "clearing_ed25519.pem"


@dataclass(frozen=True)
class Signer:
    private_key: Ed25519PrivateKey

    @property
    def public_pem(self) -> bytes:
        return self.private_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)

    @property
    def key_id(self) -> str:
        raw = self.private_key.public_key().public_bytes(serialization.Encoding.Raw,
                                                         serialization.PublicFormat.Raw)
        return hashlib.sha256(raw).hexdigest()[:32]

    def sign(self, body: bytes) -> bytes:
        return self.private_key.sign(body)


def home() -> Path:
    return Path(os.environ.get("LIANJIE_HOME", "var"))


def load_signer(directory: Path | None = None) -> Signer:
    """The platform key under ``directory`` (default ``$LIANJIE_HOME``), made on first use."""
    path = (directory or home()) / KEY_FILE
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
        # Written whole to a private file, then linked into place: a process racing this one
        # sees either no key or the complete key, never a half-written one.
        fd, tmp = tempfile.mkstemp(prefix=KEY_FILE, dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(pem)
                f.flush()
                os.fsync(f.fileno())
            os.link(tmp, path)
        except FileExistsError:
            pass  # another process made it first: use theirs
        finally:
            os.unlink(tmp)
    try:
        loaded = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (ValueError, OSError) as exc:
        raise ConfigError(f"cannot read the signing key {path}: {exc}") from exc
    if not isinstance(loaded, Ed25519PrivateKey):
        raise ConfigError(f"{path} is not an Ed25519 private key")
    return Signer(loaded)

"""What a bundle is: its manifest and member paths, its limits, and what never travels
in it (keys). Shared by packing, unpacking and rerunning."""

from __future__ import annotations

import gzip
import hashlib
import re
import zlib
from typing import Any

from ..errors import InputError

SCHEMA = "tcplab.bundle/1"
MANIFEST = "bundle.json"
RESULTS = "results"
SETUP = "setup"
LAB_FILE = f"{SETUP}/lab.yaml"
PROFILE_FILE = f"{SETUP}/profile.yaml"
PROFILE_FILES_DIR = f"{SETUP}/profile-files"
SCENARIO_FILE = f"{SETUP}/scenario.yaml"
IMAGE_DIR = f"{SETUP}/images/node"

MAX_MANIFEST_BYTES = 16 * 2**20
MAX_MEMBERS = 100_000
MAX_TOTAL_BYTES = 8 * 2**30
MAX_PROFILE_BYTES = 2**20
CHUNK = 1 << 20

#: PEM and PGP private keys: ``-----BEGIN OPENSSH PRIVATE KEY-----``, ``... RSA PRIVATE KEY``,
#: ``... ENCRYPTED PRIVATE KEY``, ``-----BEGIN PGP PRIVATE KEY BLOCK-----``.
KEY_TEXT = re.compile(rb"-----BEGIN[ A-Z0-9]*PRIVATE KEY[ A-Z]*-----")
#: File names of keys: id_rsa, id_ed25519(_sk), ssh_host_*_key, *.pem, *.key, *.p12, *.pfx, *.ppk.
KEY_NAME = re.compile(r"^(id_(rsa|dsa|ecdsa|ed25519)(_sk)?|ssh_host_.*_key"
                      r"|.*\.(pem|key|p12|pfx|ppk))$", re.IGNORECASE)
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,199}$")
BACKENDS = ("netns", "docker", "auto", "ssh", "vm")


# -- secrets -----------------------------------------------------------------------------------

def secret_reason(name: str, data: bytes) -> str | None:
    """Why a file must not travel in a bundle, or None."""
    if KEY_NAME.match(name):
        return f"named like a key file ({name})"
    if KEY_TEXT.search(data):
        return "looks like a private key (-----BEGIN ... PRIVATE KEY-----)"
    if name.endswith(".gz"):
        try:
            inner = gzip.decompress(data)
        except (OSError, EOFError, zlib.error):
            return None
        if KEY_TEXT.search(inner):
            return "holds a private key once decompressed (-----BEGIN ... PRIVATE KEY-----)"
    return None


def refuse_secret(where: str, name: str, data: bytes) -> None:
    reason = secret_reason(name, data)
    if reason:
        raise InputError(f"{where}: {reason}; a bundle never holds keys: remove it and export "
                         "again")




def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()



def safe_name(text: Any, fallback: str) -> str:
    return text if isinstance(text, str) and SAFE_NAME.match(text) and text not in (".", "..") \
        else fallback


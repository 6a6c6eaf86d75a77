"""`trust`'s local files: the client key pair it creates, never over anything, and the trust
password it reads (no host, no daemon)."""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import load_pem_private_key

import hostsched.trust
from hostsched.errors import ExitCode, HostUnreachable, UsageError
from hostsched.lxd import _pinned_fingerprint
from hostsched.lxdconfig import LiveHost
from hostsched.trust import ensure_client_certificate, trust_password
from hostsched.yamlnodes import MAX_SECRET_BYTES

OPERATOR_KEY = b"-----BEGIN PRIVATE KEY-----\nan operator's key\n-----END PRIVATE KEY-----\n"


def files_under(folder: Path) -> dict[str, bytes | None]:
    """Every path under ``folder``, with a file's bytes (None for a directory)."""
    return {
        str(p.relative_to(folder)): p.read_bytes() if p.is_file() else None
        for p in sorted(folder.rglob("*"))
    }


# --- the client key pair ---------------------------------------------------------------------


def test_creates_a_pair_when_neither_file_exists(tmp_path: Path) -> None:
    cert, key = tmp_path / "new" / "client.crt", tmp_path / "new" / "client.key"
    assert ensure_client_certificate(cert, key) is True
    certificate = x509.load_pem_x509_certificate(cert.read_bytes())
    private = load_pem_private_key(key.read_bytes(), password=None)
    assert certificate.public_key() == private.public_key()
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE(cert.parent.stat().st_mode) == 0o700


def test_uses_a_pair_that_exists(tmp_path: Path) -> None:
    cert, key = tmp_path / "client.crt", tmp_path / "client.key"
    ensure_client_certificate(cert, key)
    before = files_under(tmp_path)
    assert ensure_client_certificate(cert, key) is False
    assert files_under(tmp_path) == before


@pytest.mark.parametrize("lost", ["cert", "key"])
def test_one_file_without_the_other_is_refused(tmp_path: Path, lost: str) -> None:
    cert, key = tmp_path / "client.crt", tmp_path / "client.key"
    kept, missing = (key, cert) if lost == "cert" else (cert, key)
    kept.write_bytes(OPERATOR_KEY)
    with pytest.raises(UsageError) as info:
        ensure_client_certificate(cert, key)
    assert info.value.exit_code == ExitCode.USAGE
    assert f"{kept} exists but" in info.value.message and str(missing) in info.value.message
    assert info.value.hint is not None and "lxd.client_cert" in info.value.hint
    assert files_under(tmp_path) == {kept.name: OPERATOR_KEY}


@pytest.mark.parametrize("which", ["cert", "key"])
def test_a_directory_is_refused(tmp_path: Path, which: str) -> None:
    cert, key = tmp_path / "client.crt", tmp_path / "client.key"
    directory = cert if which == "cert" else key
    directory.mkdir()
    with pytest.raises(UsageError, match=f"{directory} is a directory"):
        ensure_client_certificate(cert, key)
    assert files_under(tmp_path) == {directory.name: None}


def test_a_device_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="/dev/null is not a regular file"):
        ensure_client_certificate(Path("/dev/null"), tmp_path / "client.key")
    assert files_under(tmp_path) == {}


@pytest.mark.parametrize(
    ("cert", "key", "reason"),
    [("config.yaml/client.crt", "client.key", "Not a directory"),
     ("client.crt", "x" * 5000, "File name too long")],
    ids=["in-a-file", "name-too-long"],
)  # fmt: skip
def test_a_path_that_cannot_be_a_file_is_refused(
    tmp_path: Path, cert: str, key: str, reason: str
) -> None:
    (tmp_path / "config.yaml").write_text("hosts: []\n")
    with pytest.raises(UsageError, match=f"cannot use client (key|certificate) .*: {reason}"):
        ensure_client_certificate(tmp_path / cert, tmp_path / key)
    assert files_under(tmp_path) == {"config.yaml": b"hosts: []\n"}


def test_one_path_for_both_is_refused(tmp_path: Path) -> None:
    both = tmp_path / "client.pem"
    with pytest.raises(UsageError, match="the client certificate and key are both"):
        ensure_client_certificate(both, both)
    assert files_under(tmp_path) == {}


def test_a_dangling_symlink_is_not_written_through(tmp_path: Path) -> None:
    cert, key = tmp_path / "client.crt", tmp_path / "client.key"
    cert.symlink_to(tmp_path / "elsewhere.crt")
    with pytest.raises(UsageError, match=f"cannot create client certificate {cert}: File exists"):
        ensure_client_certificate(cert, key)
    assert not (tmp_path / "elsewhere.crt").exists()
    assert not key.exists(), "half a pair was left behind"


def test_a_file_that_appears_meanwhile_is_kept_and_no_half_pair_is_left(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cert, key = tmp_path / "client.crt", tmp_path / "client.key"
    make_pair = hostsched.trust._new_client_pair

    def racing() -> tuple[bytes, bytes]:
        cert.write_bytes(b"another run's certificate")  # between the check and the writes
        return make_pair()

    monkeypatch.setattr(hostsched.trust, "_new_client_pair", racing)
    with pytest.raises(UsageError, match=f"cannot create client certificate {cert}"):
        ensure_client_certificate(cert, key)
    assert files_under(tmp_path) == {"client.crt": b"another run's certificate"}


def test_a_key_that_cannot_be_created_leaves_nothing(tmp_path: Path) -> None:
    cert, key = tmp_path / "client.crt", tmp_path / "client.key"
    key.symlink_to(tmp_path / "missing-dir" / "client.key")
    with pytest.raises(UsageError, match=f"cannot create client key {key}: File exists"):
        ensure_client_certificate(cert, key)
    assert not cert.exists() and not (tmp_path / "missing-dir").exists()


# --- the trust password and the pinned certificate -----------------------------------------


def live(**settings: Any) -> LiveHost:
    return LiveHost(address="https://127.0.0.1:1", **settings)


def test_trust_password_from_a_file(tmp_path: Path) -> None:
    file = tmp_path / "pw"
    file.write_bytes(b"p" * (MAX_SECRET_BYTES - 1) + b"\n")  # the limit, newline included
    assert trust_password("a", live(trust_password_file=file), {}) == "p" * (MAX_SECRET_BYTES - 1)


@pytest.mark.parametrize("content", ["too-large", "directory", "latin-1"])
def test_unusable_trust_password_files_are_usage_errors(tmp_path: Path, content: str) -> None:
    file = tmp_path / "pw"
    if content == "directory":
        file.mkdir()
    else:
        file.write_bytes(b"p" * (MAX_SECRET_BYTES + 1) if content == "too-large" else b"caf\xe9")
    with pytest.raises(UsageError) as info:
        trust_password("a", live(trust_password_file=file), {})
    reason = {"too-large": "too large", "directory": "Is a directory", "latin-1": "not UTF-8"}
    assert info.value.message.startswith(f"a: cannot read trust_password_file {file}: ")
    assert reason[content] in info.value.message


def test_a_huge_pinned_certificate_is_not_read_whole(tmp_path: Path) -> None:
    pinned = tmp_path / "server.crt"
    pinned.write_bytes(b"-" * (MAX_SECRET_BYTES + 1))
    with pytest.raises(HostUnreachable, match=f"{pinned}: too large"):
        _pinned_fingerprint("a", live(server_cert=str(pinned)))

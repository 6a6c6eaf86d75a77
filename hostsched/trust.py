"""trust: register hostsched's client certificate with a live host and pin its certificate.

Like ``lxc remote add``: fetch the certificate the host presents, have the operator confirm
its SHA-256 fingerprint (or pass it), save it to pin, then present the trust password so the
host adds our client certificate. The password comes from a file or an environment variable
named in the config, never from the command line, and is never printed.
"""

from __future__ import annotations

import datetime
import os
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from hostsched.config import Config, HostConfig
from hostsched.errors import TrustRefused, UnknownHostError, UsageError
from hostsched.lxd import (
    client_paths,
    connect,
    default_server_cert,
    fetch_server_certificate,
    fingerprint,
    translated,
)
from hostsched.lxdconfig import LiveHost


@dataclass(frozen=True)
class TrustResult:
    host: str
    fingerprint: str
    server_cert: str | None  # where the certificate was saved; None if pinned by fingerprint
    client_cert: str
    created_client_cert: bool
    already_trusted: bool


def ensure_client_certificate(cert: Path, key: Path) -> bool:
    """Create an EC P-384 key pair and self-signed client certificate if missing."""
    if cert.is_file() and key.is_file():
        return False
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    private = ec.generate_private_key(ec.SECP384R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"hostsched@{socket.gethostname()}")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(private.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(private, hashes.SHA384())
    )
    key.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    cert.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    descriptor = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as out:
        out.write(
            private.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return True


def trust_password(name: str, live: LiveHost, env: Mapping[str, str]) -> str:
    """The host's trust password from its environment variable, else its file."""
    if live.trust_password_env and env.get(live.trust_password_env):
        return env[live.trust_password_env]
    if live.trust_password_file is not None:
        try:
            return live.trust_password_file.read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as exc:
            raise UsageError(
                f"{name}: cannot read trust_password_file {live.trust_password_file}: "
                f"{exc.strerror}"
            ) from None
    where = f"${live.trust_password_env} is not set" if live.trust_password_env else "none is set"
    raise UsageError(
        f"{name}: no trust password ({where})",
        hint="set trust_password_file: or trust_password_env: for the host in the config",
    )


def trust(
    config: Config,
    name: str,
    *,
    confirm: Callable[[str], bool],
    env: Mapping[str, str] | None = None,
) -> TrustResult:
    """Pin ``name``'s certificate (after ``confirm(fingerprint)``) and get our client trusted."""
    host = config.host(name)
    if host is None:
        raise UnknownHostError(name)
    live = _https_host(host)
    cert, key = client_paths(live)
    created = ensure_client_certificate(cert, key)

    pem = fetch_server_certificate(name, live.address, config.lxd.timeout)
    seen = fingerprint(pem)
    saved: str | None = None
    if live.pinned_fingerprint is not None:
        if seen != live.pinned_fingerprint:
            raise TrustRefused(
                f"{name}: the host's certificate {seen} is not the configured fingerprint",
                hint="check server_cert: in the config, or that you reach the right host",
            )
    else:
        if not confirm(seen):
            raise TrustRefused(f"{name}: certificate fingerprint not confirmed; nothing changed")
        path = Path(live.server_cert) if live.server_cert else default_server_cert(name)
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        path.write_text(pem)
        saved = str(path)
        live = replace(live, server_cert=saved)

    client = connect(name, live, config.lxd)
    already = bool(client.trusted)
    if not already:
        password = trust_password(name, live, os.environ if env is None else env)
        with translated(name):
            try:
                client.authenticate(password, use_token_auth=False)
            except Exception as exc:  # pylxd raises its API error; the password stays out of it
                if type(exc).__name__ in ("LXDAPIException", "Conflict", "NotFound"):
                    raise TrustRefused(
                        f"{name}: the host refused the trust password",
                        hint="check the password, and core.trust_password on the host",
                    ) from None
                raise
        if not client.trusted:
            raise TrustRefused(f"{name}: the host did not trust the client certificate")
    return TrustResult(name, seen, saved, str(cert), created, already)


def _https_host(host: HostConfig) -> LiveHost:
    if host.live is None:
        raise UsageError(f"{host.name} is a static host: there is nothing to trust")
    if host.live.is_unix:
        raise UsageError(
            f"{host.name} is reached through a unix socket, which needs no trust",
            hint="local sockets are protected by file permissions",
        )
    return host.live

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
import stat
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
from hostsched.yamlnodes import read_secret


@dataclass(frozen=True)
class TrustResult:
    host: str
    fingerprint: str
    server_cert: str | None  # where the certificate was saved; None if pinned by fingerprint
    client_cert: str
    created_client_cert: bool
    already_trusted: bool


def ensure_client_certificate(cert: Path, key: Path) -> bool:
    """Create an EC P-384 key pair and self-signed client certificate if neither file exists.

    Both files present are used as they are. Nothing is ever written over: one file without the
    other may be an operator's key whose certificate was lost (or a path named by mistake), so
    that, a directory, or a path that cannot be created is a UsageError naming the path.
    """
    files = {"client certificate": cert, "client key": key}
    present = [what for what, path in files.items() if _is_file(what, path)]
    if len(present) == 2:
        return False
    if present:
        found, missing = present[0], next(what for what in files if what not in present)
        raise UsageError(
            f"{found} {files[found]} exists but {missing} {files[missing]} does not; "
            "not making a new key pair over it",
            hint=f"restore {files[missing]}, or {_ELSEWHERE}",
        )
    if cert == key:
        raise UsageError(f"the client certificate and key are both {cert}", hint=_ELSEWHERE)
    cert_pem, key_pem = _new_client_pair()
    _create("client key", key, key_pem, 0o600)
    try:
        _create("client certificate", cert, cert_pem, 0o644)
    except BaseException:
        key.unlink(missing_ok=True)  # no half pair left behind, which the next run would refuse
        raise
    return True


_ELSEWHERE = "point lxd.client_cert and lxd.client_key (or the host's) at two new file names"


def _is_file(what: str, path: Path) -> bool:
    """Whether ``path`` is a regular file (False: nothing there); UsageError if something else."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise UsageError(f"cannot use {what} {path}: {exc.strerror}", hint=_ELSEWHERE) from None
    if not stat.S_ISREG(mode):
        kind = "a directory" if stat.S_ISDIR(mode) else "not a regular file"
        raise UsageError(f"{what} {path} is {kind}", hint=f"remove it, or {_ELSEWHERE}")
    return True


def _create(what: str, path: Path, data: bytes, mode: int) -> None:
    """A new file at ``path``, never over an existing one; on failure nothing is left there."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except OSError as exc:
        raise UsageError(f"cannot create {what} {path}: {exc.strerror}", hint=_ELSEWHERE) from None
    try:
        with os.fdopen(descriptor, "wb") as out:
            out.write(data)
    except BaseException as exc:
        path.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise UsageError(f"cannot write {what} {path}: {exc.strerror}") from None
        raise


def _new_client_pair() -> tuple[bytes, bytes]:
    """A self-signed client certificate and its private key, both PEM."""
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
    key = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return certificate.public_bytes(serialization.Encoding.PEM), key


def trust_password(name: str, live: LiveHost, env: Mapping[str, str]) -> str:
    """The host's trust password from its environment variable, else its file."""
    if live.trust_password_env and env.get(live.trust_password_env):
        return env[live.trust_password_env]
    if live.trust_password_file is not None:
        try:
            return read_secret(live.trust_password_file)
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

"""Open the store a Config names: its Redis URL, or the embedded server when there is none."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

from hostsched.config import Config, RedisConfig
from hostsched.errors import UsageError
from hostsched.keys import Keys
from hostsched.store import Store

#: redis-py's URL option naming the CA file that verifies a ``rediss://`` server.
CA_OPTION = "ssl_ca_certs"


def store_url(config: Config) -> str:
    """The configured Redis URL, else the embedded valkey-server's (started if need be).

    A configured ``tls_ca_file`` rides in the URL as redis-py's ``ssl_ca_certs`` option, so
    every client opened from this URL (bench's worker processes too) verifies the server
    against it.
    """
    url = config.redis.url
    ca_file = config.redis.tls_ca_file
    if ca_file is not None and (url is None or urlsplit(url).scheme.lower() != "rediss"):
        # A CA with a plain connection means the operator expects TLS that would not happen.
        raise UsageError(
            "redis.tls_ca_file is set, but the Redis URL is not rediss://",
            hint="use a rediss:// URL, or unset tls_ca_file and HOSTSCHED_REDIS_CA_FILE",
        )
    if url is None and config.redis.cluster:
        raise UsageError(
            "redis.cluster is set, but no Redis URL names a seed node",
            hint="set redis.url or HOSTSCHED_REDIS_URL to one node of the cluster",
        )
    if url is None:
        from hostsched.embedded import EmbeddedServer

        return EmbeddedServer().ensure_running()
    return url if ca_file is None else with_ca_file(url, ca_file)


def with_ca_file(url: str, ca_file: Path) -> str:
    """``url`` with ``ssl_ca_certs`` set to ``ca_file``, unless the URL names a CA itself."""
    parts = urlsplit(url)
    if CA_OPTION in parse_qs(parts.query):
        return url  # the URL is the more specific setting, as with a password in it
    query = "&".join(q for q in (parts.query, urlencode({CA_OPTION: str(ca_file)})) if q)
    return urlunsplit(parts._replace(query=query))


def open_store(config: Config) -> Store:
    """A Store for ``config``."""
    return open_store_at(store_url(config), config.redis)


def open_store_at(url: str, redis: RedisConfig) -> Store:
    """A Store at ``url`` with the prefix, password, timeout, cluster mode and busy wait of
    ``redis`` (bench's processes open theirs at the URL their parent resolved)."""
    return Store.connect(
        url,
        keys=Keys(redis.prefix),
        password=redis.password,
        timeout=redis.timeout,
        cluster=redis.cluster,
        busy_wait_us=redis.busy_wait_us,
    )

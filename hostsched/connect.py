"""Open the store a Config names: its Redis URL, or the embedded server when there is none."""

from __future__ import annotations

from hostsched.config import Config
from hostsched.keys import Keys
from hostsched.store import Store


def store_url(config: Config) -> str:
    """The configured Redis URL, else the embedded valkey-server's (started if need be)."""
    if config.redis.url is not None:
        return config.redis.url
    from hostsched.embedded import EmbeddedServer

    return EmbeddedServer().ensure_running()


def open_store(config: Config) -> Store:
    """A Store for ``config``."""
    return Store.connect(
        store_url(config),
        keys=Keys(config.redis.prefix),
        password=config.redis.password,
        timeout=config.redis.timeout,
    )

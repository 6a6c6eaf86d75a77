"""Open the store a Config names: its Redis URL, or the embedded server when there is none."""

from __future__ import annotations

from hostsched.config import Config
from hostsched.keys import Keys
from hostsched.store import Store


def open_store(config: Config) -> Store:
    """A Store for ``config``; starts the embedded valkey-server if no URL is configured."""
    url = config.redis.url
    if url is None:
        from hostsched.embedded import EmbeddedServer

        url = EmbeddedServer().ensure_running()
    return Store.connect(
        url,
        keys=Keys(config.redis.prefix),
        password=config.redis.password,
        timeout=config.redis.timeout,
    )

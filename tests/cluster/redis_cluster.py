"""A real Redis Cluster on 127.0.0.1 for tests: start it, break it, stop it, leave no process.

Why a real cluster: fakeredis and a single ``redis-server`` accept multi-key commands and scripts
whose keys hash to different slots, which a cluster refuses with ``CROSSSLOT``; redirects
(``MOVED``/``ASK``) and failover only exist here.

How:

- Every node is a plain ``redis-server`` child process (no ``--daemonize``), so ``stop()`` can
  always reap it; its stdout/stderr go to ``<directory>/node-<port>/redis.log``, whose tail ends up
  in every ``ClusterFixtureError`` about that node.
- A node listens on ``port`` and on the cluster bus ``port + 10000``, both on 127.0.0.1 only. Ports
  are picked from a random base in 20000–44000 (so concurrent runs rarely meet) where both are free
  right now; a node that still loses the race ("Address already in use") makes ``start`` try again
  on other ports. A node is only taken as up once ``INFO`` reports *its* pid, so a stranger that
  grabbed the port is never mistaken for it.
- ``redis-cli --cluster create`` assigns the slots and the replicas; the fixture then waits until
  every node says ``cluster_state:ok``, knows all the others and sees all 16384 slots assigned,
  and every replica's link to its primary is up.
- ``--cluster-node-timeout 1000`` makes failure detection and failover take seconds, not the
  default 15 s; ``--cluster-replica-validity-factor 0`` lets a replica take over however long its
  link was down, so a test never waits on replication history.
- ``--repl-diskless-sync-delay 0``: a primary otherwise waits 5 s for more replicas before the
  first full sync, which would be most of a replicated cluster's start-up time.

Roles change after a failover, so ``primaries()``, ``replicas()`` and ``primary_for_key()`` ask the
cluster (``CLUSTER NODES``) every time instead of remembering what ``redis-cli`` set up.
"""

from __future__ import annotations

import random
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, TypeAlias

import redis

HOST = "127.0.0.1"
SLOT_COUNT = 16384
BUS_PORT_OFFSET = 10000
PORT_BASE_RANGE = (20000, 44000)
PORT_LIMIT = 55000
PORT_ATTEMPTS = 5
NODE_START_TIMEOUT = 10.0
READY_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
COMMAND_TIMEOUT = 2.0
POLL_INTERVAL = 0.05
LOG_TAIL_LINES = 25
ADDRESS_IN_USE = "Address already in use"
NODE_OPTIONS = (
    *("--bind", HOST, "--protected-mode", "no", "--daemonize", "no"),
    *("--save", "", "--appendonly", "no", "--repl-diskless-sync-delay", "0"),
    *("--cluster-enabled", "yes", "--cluster-node-timeout", "1000"),
    *("--cluster-replica-validity-factor", "0", "--cluster-require-full-coverage", "yes"),
)
"""Options every node shares; its port, directory and cluster config file are added per node."""


class ClusterFixtureError(RuntimeError):
    """The cluster could not be started, or did not reach the state a test waits for."""


class _PortClash(ClusterFixtureError):
    """A node could not bind its port or bus port: someone took it after we checked."""


def port_is_free(port: int) -> bool:
    """Whether ``port`` can be bound on 127.0.0.1 now (no SO_REUSEADDR, so TIME_WAIT counts)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((HOST, port))
        except OSError:
            return False
    return True


def pick_ports(count: int, rng: random.Random) -> list[int]:
    """``count`` ports below ``PORT_LIMIT`` whose cluster bus port is free as well."""
    start = rng.randrange(*PORT_BASE_RANGE)
    ports: list[int] = []
    for port in range(start, PORT_LIMIT):
        if port_is_free(port) and port_is_free(port + BUS_PORT_OFFSET):
            ports.append(port)
            if len(ports) == count:
                return ports
    raise ClusterFixtureError(f"no {count} free port pairs in {start}–{PORT_LIMIT}")


@dataclass(frozen=True)
class NodeEntry:
    """One line of ``CLUSTER NODES``: one node as some node of the cluster sees it."""

    node_id: str
    port: int
    flags: frozenset[str]
    primary_id: str | None
    slots: tuple[tuple[int, int], ...]

    @property
    def is_primary(self) -> bool:
        return "master" in self.flags

    @property
    def is_replica(self) -> bool:
        return "slave" in self.flags

    @property
    def failed(self) -> bool:
        """Marked failed by the cluster (``fail``) or suspected by this node (``fail?``)."""
        return bool(self.flags & {"fail", "fail?"})

    def owns(self, slot: int) -> bool:
        return any(first <= slot <= last for first, last in self.slots)


def parse_cluster_nodes(text: str) -> list[NodeEntry]:
    """Parse ``CLUSTER NODES``; slots being migrated (``[slot->-id]``) are left out."""
    entries: list[NodeEntry] = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 8:
            continue
        # ip:port@cport[,hostname]; a node whose address is unknown shows ":0@0".
        address = fields[1].split(",", 1)[0].split("@", 1)[0]
        slots: list[tuple[int, int]] = []
        for token in fields[8:]:
            if token.startswith("["):
                continue
            first, _, last = token.partition("-")
            slots.append((int(first), int(last or first)))
        entries.append(
            NodeEntry(
                node_id=fields[0],
                port=int(address.rpartition(":")[2] or 0),
                flags=frozenset(fields[2].split(",")),
                primary_id=None if fields[3] == "-" else fields[3],
                slots=tuple(slots),
            )
        )
    return entries


@dataclass(eq=False)
class LocalNode:
    """One ``redis-server`` child process of a ``LocalCluster``; compared by identity."""

    port: int
    directory: Path
    process: subprocess.Popen[bytes]
    node_id: str = ""

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.directory / "redis.log"

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def command(self, *args: str | int) -> Any:
        """Run one command on this node alone, on a short-lived connection (no redirects)."""
        client = redis.Redis(
            host=HOST,
            port=self.port,
            decode_responses=True,
            socket_timeout=COMMAND_TIMEOUT,
            socket_connect_timeout=COMMAND_TIMEOUT,
        )
        try:
            return client.execute_command(*args)  # type: ignore[no-untyped-call]  # redis-py
        finally:
            client.close()

    def role(self) -> Literal["primary", "replica"]:
        """What the node itself says it is now (``ROLE``), which changes on failover."""
        reply = self.command("ROLE")
        return "primary" if reply[0] == "master" else "replica"

    def cluster_info(self) -> dict[str, str]:
        text: str = self.command("CLUSTER", "INFO")
        return dict(line.split(":", 1) for line in text.splitlines() if ":" in line)

    def cluster_nodes(self) -> list[NodeEntry]:
        return parse_cluster_nodes(self.command("CLUSTER", "NODES"))

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError as error:
            return f"(no log: {error})"
        return "\n".join(text.splitlines()[-lines:]) or "(empty log)"

    def describe(self) -> str:
        """A label for error messages: port, and exit status if the process is gone."""
        status = "running" if self.alive else f"exited {self.process.returncode}"
        return f"node {HOST}:{self.port} ({status})"


Problem: TypeAlias = tuple[LocalNode | None, str]
"""Why a wait is not over yet: the node concerned (``None``: the cluster as a whole), and what."""


def _spawn(binary: str, directory: Path, port: int) -> LocalNode:
    """Start one cluster-enabled node on ``port``; it does not wait for it to answer."""
    node_directory = directory / f"node-{port}"
    node_directory.mkdir(parents=True, exist_ok=True)
    with (node_directory / "redis.log").open("wb") as log:
        process = subprocess.Popen(
            [
                binary,
                *("--port", str(port), "--dir", str(node_directory)),
                *("--cluster-config-file", str(directory / f"nodes-{port}.conf")),
                *NODE_OPTIONS,
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    return LocalNode(port, node_directory, process)


def _wait_until_up(node: LocalNode, deadline: float) -> None:
    """Until ``node`` answers as itself; raises ``_PortClash`` if it could not bind."""
    while True:
        if not node.alive:
            tail = node.log_tail()
            if ADDRESS_IN_USE in tail:
                raise _PortClash(f"{node.describe()}: port taken")
            raise ClusterFixtureError(f"{node.describe()} did not start; log tail:\n{tail}")
        try:
            info = node.command("INFO", "server")
            if int(info["process_id"]) == node.process.pid:
                node.node_id = node.command("CLUSTER", "MYID")
                return
            # Another server holds the port: ours is about to exit with "Address already in use".
        except redis.RedisError:
            pass
        if time.monotonic() > deadline:
            raise ClusterFixtureError(
                f"{node.describe()} did not answer within {NODE_START_TIMEOUT:g} s; "
                f"log tail:\n{node.log_tail()}"
            )
        time.sleep(POLL_INTERVAL)


def _stop_nodes(nodes: Sequence[LocalNode]) -> None:
    """SIGTERM all, then reap each within ``STOP_TIMEOUT``, SIGKILLing a node that lingers."""
    for node in nodes:
        if node.alive:
            node.process.terminate()
    for node in nodes:
        try:
            node.process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            node.process.kill()
            node.process.wait(STOP_TIMEOUT)


def _wait_for(what: str, timeout: float, problems: Callable[[], list[Problem]]) -> None:
    """Poll ``problems`` until it finds none; on timeout raise with them and a node's log."""
    deadline = time.monotonic() + timeout
    while True:
        found = problems()
        if not found:
            return
        if time.monotonic() > deadline:
            lines = [f"{node.describe() if node else 'cluster'}: {text}" for node, text in found]
            culprit = next((node for node, _ in found if node is not None), None)
            tail = f"\nlog tail of {culprit.describe()}:\n{culprit.log_tail()}" if culprit else ""
            raise ClusterFixtureError(
                f"{what} not reached within {timeout:g} s:\n" + "\n".join(lines) + tail
            )
        time.sleep(POLL_INTERVAL)


class LocalCluster:
    """A running Redis Cluster of local ``redis-server`` children; build it with ``start``."""

    def __init__(self, directory: Path, nodes: list[LocalNode], replicas: int) -> None:
        self.directory = directory
        self.nodes = nodes
        self.replicas_per_primary = replicas
        self._initial_primaries: list[LocalNode] = []
        self._former_replicas: dict[LocalNode, frozenset[str]] = {}

    @classmethod
    def start(
        cls,
        directory: Path,
        primaries: int = 3,
        replicas: int = 0,
        *,
        server_binary: str = "redis-server",
        cli_binary: str = "redis-cli",
        timeout: float = READY_TIMEOUT,
        rng: random.Random | None = None,
    ) -> LocalCluster:
        """Start ``primaries`` primaries with ``replicas`` replicas *each* in ``directory``.

        Returns once the cluster is ok on every node; on any failure every node already
        started is stopped before the error propagates.
        """
        if primaries < 3:
            raise ValueError("redis-cli --cluster create needs at least 3 primaries")
        if replicas < 0:
            raise ValueError("replicas must be >= 0")
        rng = rng or random.Random()
        count = primaries * (1 + replicas)
        for _ in range(PORT_ATTEMPTS):
            nodes: list[LocalNode] = []
            try:
                for port in pick_ports(count, rng):
                    nodes.append(_spawn(server_binary, directory, port))
                deadline = time.monotonic() + NODE_START_TIMEOUT
                for node in nodes:
                    _wait_until_up(node, deadline)
            except _PortClash:
                _stop_nodes(nodes)
                for node in nodes:
                    shutil.rmtree(node.directory, ignore_errors=True)
                    (directory / f"nodes-{node.port}.conf").unlink(missing_ok=True)
                continue
            except BaseException:
                _stop_nodes(nodes)
                raise
            cluster = cls(directory, nodes, replicas)
            try:
                cluster._create(cli_binary, timeout)
                cluster._wait_ready(timeout)
            except BaseException:
                cluster.stop()
                raise
            return cluster
        raise ClusterFixtureError(f"ports kept clashing in {PORT_ATTEMPTS} attempts")

    def _create(self, cli_binary: str, timeout: float) -> None:
        """Join the nodes and assign slots and replicas with ``redis-cli --cluster create``."""
        addresses = [f"{HOST}:{node.port}" for node in self.nodes]
        replicas = str(self.replicas_per_primary)
        command = [cli_binary, "--cluster", "create", *addresses]
        command += ["--cluster-replicas", replicas, "--cluster-yes"]
        try:
            result = subprocess.run(
                command,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as error:
            message = f"redis-cli --cluster create did not finish within {timeout:g} s"
            raise ClusterFixtureError(message) from error
        if result.returncode != 0:
            output = "\n".join((result.stdout + result.stderr).splitlines()[-LOG_TAIL_LINES:])
            raise ClusterFixtureError(
                f"redis-cli --cluster create failed (exit {result.returncode}):\n{output}"
            )

    def _wait_ready(self, timeout: float) -> None:
        """Until every node agrees the cluster is whole, and every replica is in sync."""
        count = len(self.nodes)
        replica_count = count - count // (1 + self.replicas_per_primary)

        def problems() -> list[Problem]:
            found: list[Problem] = []
            for node in self.nodes:
                try:
                    info = node.cluster_info()
                    state = (
                        info.get("cluster_state"),
                        info.get("cluster_slots_assigned"),
                        info.get("cluster_known_nodes"),
                    )
                    if state != ("ok", str(SLOT_COUNT), str(count)):
                        summary = "/".join(str(value) for value in state)
                        found.append((node, f"state/slots assigned/known nodes: {summary}"))
                        continue
                    replicas = [entry for entry in node.cluster_nodes() if entry.is_replica]
                    if len(replicas) != replica_count:
                        found.append((node, f"sees {len(replicas)} of {replica_count} replicas"))
                    if node.role() == "replica":
                        link = node.command("INFO", "replication").get("master_link_status")
                        if link != "up":
                            found.append((node, f"master_link_status:{link}"))
                except redis.RedisError as error:
                    found.append((node, f"unreachable: {error}"))
            return found

        _wait_for("cluster_state:ok on every node", timeout, problems)
        self._initial_primaries = self.primaries()

    # -- the cluster as it is now -------------------------------------------------------------

    def live_nodes(self) -> list[LocalNode]:
        return [node for node in self.nodes if node.alive]

    def _view(self) -> list[NodeEntry]:
        """``CLUSTER NODES`` from the first live node that answers."""
        errors: list[str] = []
        for node in self.live_nodes():
            try:
                return node.cluster_nodes()
            except redis.RedisError as error:
                errors.append(f"{node.describe()}: {error}")
        raise ClusterFixtureError("no live node answers CLUSTER NODES: " + "; ".join(errors))

    def _nodes_where(self, wanted: Callable[[NodeEntry], bool]) -> list[LocalNode]:
        ids = {entry.node_id for entry in self._view() if wanted(entry)}
        return [node for node in self.live_nodes() if node.node_id in ids]

    def primaries(self) -> list[LocalNode]:
        """Live nodes the cluster currently lists as primaries, in port order."""
        return self._nodes_where(lambda entry: entry.is_primary and not entry.failed)

    def replicas(self) -> list[LocalNode]:
        """Live nodes the cluster currently lists as replicas, in port order."""
        return self._nodes_where(lambda entry: entry.is_replica and not entry.failed)

    def replicas_of(self, primary: LocalNode) -> list[LocalNode]:
        """Live nodes the cluster currently lists as replicas of ``primary``."""
        return self._nodes_where(
            lambda entry: entry.is_replica and entry.primary_id == primary.node_id
        )

    def node_by_id(self, node_id: str) -> LocalNode:
        for node in self.nodes:
            if node.node_id == node_id:
                return node
        raise ClusterFixtureError(f"no node with id {node_id}")

    def primary_for_key(self, key: str) -> LocalNode:
        """The live primary serving ``key``'s slot now (``CLUSTER KEYSLOT`` + ``CLUSTER NODES``)."""
        live = self.live_nodes()
        if not live:
            raise ClusterFixtureError("no live node")
        slot = int(live[0].command("CLUSTER", "KEYSLOT", key))
        for entry in self._view():
            if entry.is_primary and not entry.failed and entry.owns(slot):
                return self.node_by_id(entry.node_id)
        raise ClusterFixtureError(f"no live primary serves slot {slot} of {key!r}")

    @property
    def urls(self) -> list[str]:
        """Every node's URL, live or not, in port order."""
        return [node.url for node in self.nodes]

    @property
    def seed_url(self) -> str:
        """A URL to start a cluster client from: the first primary, or a live node once it died."""
        for node in [*self._initial_primaries, *self.nodes]:
            if node.alive:
                return node.url
        raise ClusterFixtureError("no live node")

    # -- changing it --------------------------------------------------------------------------

    def flushall(self) -> None:
        """Empty every live primary (replicas follow, and refuse FLUSHALL themselves)."""
        for node in self.primaries():
            node.command("FLUSHALL")

    def kill(self, node: LocalNode) -> None:
        """SIGKILL ``node`` and reap it, noting its replicas for ``wait_for_failover``."""
        if node.alive:
            view = self._view()
            self._former_replicas[node] = frozenset(
                entry.node_id for entry in view if entry.primary_id == node.node_id
            )
        node.process.kill()
        node.process.wait(STOP_TIMEOUT)

    def wait_for_failover(self, killed_node: LocalNode, timeout: float = 30.0) -> LocalNode:
        """Until a former replica of ``killed_node`` serves slots and every survivor is ok.

        Every survivor must also mark the killed node ``fail`` and see the promoted replica as a
        primary with slots, so whichever node a client asks gives the same answer. Returns the
        promoted node.
        """
        former = self._former_replicas.get(killed_node)
        if former is None:
            raise ClusterFixtureError(f"{killed_node.describe()} was not killed with kill()")
        if not former:
            raise ClusterFixtureError(f"{killed_node.describe()} had no replica to take over")
        promoted: list[str] = []

        def problems() -> list[Problem]:
            found: list[Problem] = []
            promoted.clear()
            for node in self.live_nodes():
                try:
                    state = node.cluster_info().get("cluster_state")
                    view = {entry.node_id: entry for entry in node.cluster_nodes()}
                except redis.RedisError as error:
                    found.append((node, f"unreachable: {error}"))
                    continue
                if state != "ok":
                    found.append((node, f"cluster_state:{state}"))
                killed = view.get(killed_node.node_id)
                if killed is not None and "fail" not in killed.flags:
                    found.append((node, f"killed node not marked fail ({','.join(killed.flags)})"))
                new = [
                    entry.node_id
                    for entry in view.values()
                    if entry.node_id in former and entry.is_primary and entry.slots
                ]
                if not new:
                    found.append((node, "no former replica of the killed node is a primary yet"))
                promoted.extend(new)
            if not found and len(set(promoted)) != 1:
                found.append((None, f"nodes disagree on the promoted replica: {set(promoted)}"))
            return found

        _wait_for(f"failover of {killed_node.describe()}", timeout, problems)
        return self.node_by_id(promoted[0])

    def stop(self) -> None:
        """Stop every node (SIGTERM, then SIGKILL after ``STOP_TIMEOUT``); safe to call again."""
        _stop_nodes(self.nodes)

    def __enter__(self) -> LocalCluster:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

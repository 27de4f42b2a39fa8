"""A real RabbitMQ cluster of three nodes on this machine, for tests in which brokers fail.

The nodes run the installed ``rabbitmq-server``, each with a name of this test run's own (``c1-<run>@localhost``,
…, so that runs at the same time don't clash), free AMQP and distribution ports on 127.0.0.1, and a directory of its
own under one temporary base: its config file (the system's ``/etc/rabbitmq/rabbitmq.conf`` pins 5672 and would win
over ``RABBITMQ_NODE_PORT``), env file (instead of ``/etc/rabbitmq/rabbitmq-env.conf``), Mnesia, logs, feature
flags, pid file and plugins (none). The system's RabbitMQ is never touched.

Run as root, the wrappers in /usr/sbin (``rabbitmq-server``, ``rabbitmqctl``, ``rabbitmq-queues``) drop to the
``rabbitmq`` user, whose home holds the Erlang cookie: the nodes and the CLI tools share it with nothing to set, and
the directories belong to that user. (The scripts in /usr/lib/rabbitmq/bin, run as root, would read root's cookie.)

``c1`` starts first; the others find it through ``classic_config`` peer discovery and join it as they boot, which
is faster than ``stop_app``/``join_cluster``/``start_app``. A node started again keeps its directory, so it rejoins.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import json
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from support import free_port

_SEARCH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/local/sbin", "/usr/sbin", "/sbin"])
RABBITMQ_SERVER = shutil.which("rabbitmq-server", path=_SEARCH)
RABBITMQCTL = shutil.which("rabbitmqctl", path=_SEARCH)
RABBITMQ_QUEUES = shutil.which("rabbitmq-queues", path=_SEARCH)
# Marks the nodes' processes with the pid of the test run that started them, to find them again.
OWNER = "CTWA_TEST_CLUSTER_OWNER"
_PREFIX = "ctwa-cluster-"


class ClusterUnavailable(Exception):
    """The cluster can't run on this machine, or did not form; the message says why (with the nodes' logs' tail)."""


@dataclass
class Node:
    name: str
    port: int
    dist_port: int
    directory: Path
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"


class Cluster:
    """``await Cluster.start_all(tag)`` starts one; ``await cluster.close()`` kills every node and removes its files.

    ``nodes`` and ``urls`` (``amqp://guest:guest@127.0.0.1:<port>/``) are in the same order; ``url(node)``. To fail
    and recover: ``kill(node)`` (SIGKILL), ``stop(node)`` (graceful), ``start(node)`` (back, and running in the
    cluster again); to look: ``leader(queue)``, ``leader_other_than(queue, node)``, ``running_nodes()`` (VMs alive),
    ``cluster_running()`` (as RabbitMQ sees it), ``wait_running(nodes)``, ``ctl(node, *args)``, ``logs_tail()``.
    """

    def __init__(self, tag: str, size: int = 3) -> None:
        self.base = Path(tempfile.mkdtemp(prefix=f"{_PREFIX}{tag}-"))
        self._nodes = [
            Node(f"c{n}-{tag}@localhost", free_port(), free_port(), self.base / f"c{n}") for n in range(1, size + 1)
        ]
        # Should the run end without the fixture's teardown (a second Ctrl-C), the nodes still go.
        atexit.register(self._kill_now)

    # What tests use.

    @property
    def nodes(self) -> list[str]:
        return [node.name for node in self._nodes]

    @property
    def urls(self) -> list[str]:
        return [node.url for node in self._nodes]

    def url(self, node: str) -> str:
        return self._node(node).url

    async def kill(self, node: str) -> None:
        """SIGKILL the node's Erlang VM, as a crash would; return once it is gone."""
        pid = self._beams().get(node)
        assert pid is not None, f"{node} is not running"
        os.kill(pid, signal.SIGKILL)
        await self._reap(self._node(node), kill=True)

    async def stop(self, node: str) -> None:
        """Shut the node down gracefully (``rabbitmqctl shutdown``); return once it is gone."""
        await self.ctl(node, "shutdown")
        await self._reap(self._node(node))

    async def start(self, node: str, within: float = 60) -> None:
        """Start a node that was killed or stopped; return once it runs in the cluster again."""
        assert node not in self._beams(), f"{node} is running"
        self._spawn(self._node(node))
        try:
            await self.wait_running({*self.running_nodes(), node}, within)
        except (TimeoutError, RuntimeError) as error:
            raise TimeoutError(f"{node} did not rejoin: {error}\n{self.logs_tail()}") from error

    async def leader(self, queue: str, vhost: str = "/") -> str | None:
        """The node whose member of quorum queue ``queue`` is the Raft leader; None while there is none (an election).

        Asks the members themselves (``rabbitmq-queues quorum_status``): ``rabbitmqctl list_queues name leader`` reads
        the queue's record instead, and leaves a queue out for a while when the leader's node has just died.
        """
        assert RABBITMQ_QUEUES is not None
        out = await self.ctl(
            self._any_running(), "quorum_status", "--formatter", "json", "-p", vhost, queue, tool=RABBITMQ_QUEUES
        )
        leaders = [
            (member["Term"], member["Node Name"]) for member in json.loads(out) if member["Raft State"] == "leader"
        ]
        return str(max(leaders)[1]) if leaders else None

    async def leader_other_than(self, queue: str, old: str, within: float = 30) -> str:
        """The queue's leader once it is on a running node other than ``old`` (a new one was elected)."""
        deadline = time.monotonic() + within
        last: str | BaseException | None = None
        while True:
            try:
                last = await self.leader(queue)
            except RuntimeError as error:  # the node asked may be busy with the failure
                last = error
            if isinstance(last, str) and last != old and last in self.running_nodes():
                return last
            assert time.monotonic() < deadline, f"{queue}: no new leader after {within} s (last answer: {last})"
            await asyncio.sleep(0.2)

    async def cluster_running(self, via: str | None = None) -> list[str]:
        """The nodes the cluster counts as running, as ``via`` (any running node by default) sees it."""
        status = json.loads(await self.ctl(via or self._any_running(), "cluster_status", "--formatter", "json"))
        return sorted(status["running_nodes"])

    async def wait_running(self, nodes: Iterable[str] | None = None, within: float = 60) -> None:
        """Wait until ``nodes`` (all by default) accept AMQP connections and each sees all of them running;
        TimeoutError if they don't within ``within`` seconds, RuntimeError at once if one of them exited."""
        expected = sorted(self.nodes if nodes is None else nodes)
        deadline = time.monotonic() + within
        while True:
            for name in expected:
                process = self._node(name).process
                if process is not None and process.poll() is not None:
                    raise RuntimeError(f"{name} exited with {process.returncode} while starting")
            views = dict(zip(expected, await asyncio.gather(*(self._view(name) for name in expected)), strict=True))
            if all(isinstance(view, list) and set(expected) <= set(view) for view in views.values()):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"nodes {expected} not all running after {within} s; each one's view: {views}")
            await asyncio.sleep(0.5)

    async def _view(self, node: str) -> list[str] | str:
        """The running nodes as ``node`` sees them once it accepts AMQP connections, or why it can't tell yet."""
        try:
            await self._accepts(self._node(node).port)
            return await self.cluster_running(via=node)
        except (OSError, RuntimeError) as error:
            return (str(error) or repr(error)).splitlines()[0]

    def running_nodes(self) -> list[str]:
        """The nodes whose Erlang VM is alive (whether or not RabbitMQ has finished booting in it)."""
        beams = self._beams()
        return [name for name in self.nodes if name in beams]

    async def ctl(self, node: str, *args: str, tool: str | None = None, within: float = 60) -> str:
        """``rabbitmqctl -n node args`` (or another of RabbitMQ's CLI tools); its stdout, or RuntimeError with its
        output. As root they run as the rabbitmq user (the wrapper in /usr/sbin does that), with its Erlang cookie."""
        tool = tool or RABBITMQCTL
        assert tool is not None
        name = Path(tool).name
        process = await asyncio.create_subprocess_exec(
            tool,
            "-q",
            "-n",
            node,
            *args,
            env=_environment(),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        try:
            out, _ = await asyncio.wait_for(process.communicate(), within)
        except TimeoutError:
            process.kill()
            await process.wait()
            raise RuntimeError(f"{name} -n {node} {' '.join(args)}: no answer after {within} s") from None
        if process.returncode != 0:
            raise RuntimeError(f"{name} -n {node} {' '.join(args)} exited {process.returncode}: {out.decode()}")
        return out.decode()

    def logs_tail(self, lines: int = 20) -> str:
        """The last lines of every node's log and of its console output."""
        parts = []
        for node in self._nodes:
            for path in [node.directory / "console.log", *sorted((node.directory / "log").glob("*.log"))]:
                with contextlib.suppress(OSError):
                    if tail := path.read_text(errors="replace").splitlines()[-lines:]:
                        parts.append(f"--- {path} (last {len(tail)} lines)\n" + "\n".join(tail))
        return "\n".join(parts)

    # Starting and tearing down.

    @classmethod
    async def start_all(cls, tag: str, size: int = 3, within: float = 90) -> Cluster:
        """Start a cluster of ``size`` nodes; ClusterUnavailable if it can't run here or does not form in time."""
        if RABBITMQ_SERVER is None or RABBITMQCTL is None or RABBITMQ_QUEUES is None:
            raise ClusterUnavailable("rabbitmq-server is not installed (not on PATH nor in /usr/sbin)")
        try:
            rabbitmq = pwd.getpwnam("rabbitmq")
        except KeyError:
            raise ClusterUnavailable("there is no rabbitmq user, which rabbitmq-server runs as") from None
        if os.geteuid() not in (0, rabbitmq.pw_uid):
            raise ClusterUnavailable("rabbitmq-server runs only as root or as the rabbitmq user")
        reap_orphans()
        cluster = cls(tag, size)
        deadline = time.monotonic() + within
        try:
            cluster._prepare(rabbitmq.pw_uid, rabbitmq.pw_gid)
            first, *others = cluster._nodes
            cluster._spawn(first)
            await cluster.wait_running([first.name], within)
            for node in others:
                cluster._spawn(node)
            await cluster.wait_running(None, deadline - time.monotonic())
        except (TimeoutError, RuntimeError, OSError) as error:
            logs = cluster.logs_tail()
            await cluster.close()
            raise ClusterUnavailable(f"the RabbitMQ cluster did not form: {error}\n{logs}") from error
        except BaseException:
            await cluster.close()
            raise
        return cluster

    async def close(self) -> None:
        """SIGKILL every node, wait until none of their processes is left, and remove their files."""
        atexit.unregister(self._kill_now)
        self._kill_now(remove=False)
        for node in self._nodes:
            await self._reap(node, kill=True)
        deadline = time.monotonic() + 10
        while self._beams():
            assert time.monotonic() < deadline, f"RabbitMQ nodes still running after SIGKILL: {self._beams()}"
            await asyncio.sleep(0.1)
        shutil.rmtree(self.base, ignore_errors=True)

    def _kill_now(self, remove: bool = True) -> None:
        for pid in self._beams().values():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if remove:
            shutil.rmtree(self.base, ignore_errors=True)

    def _prepare(self, uid: int, gid: int) -> None:
        seed = self._nodes[0].name
        for node in self._nodes:
            node.directory.mkdir()
            config = [
                f"listeners.tcp.local = 127.0.0.1:{node.port}",
                "loopback_users = none",
            ]
            if node.name != seed:
                config += [
                    "cluster_formation.peer_discovery_backend = classic_config",
                    f"cluster_formation.classic_config.nodes.1 = {seed}",
                ]
            (node.directory / "rabbitmq.conf").write_text("\n".join(config) + "\n")
            (node.directory / "rabbitmq-env.conf").write_text("# not the system's /etc/rabbitmq/rabbitmq-env.conf\n")
            (node.directory / "enabled_plugins").write_text("[].\n")
        for path in [self.base, *self.base.rglob("*")]:
            os.chown(path, uid, gid)

    def _spawn(self, node: Node) -> None:
        assert RABBITMQ_SERVER is not None
        directory = node.directory
        environment = _environment() | {
            "RABBITMQ_NODENAME": node.name,
            "RABBITMQ_DIST_PORT": str(node.dist_port),
            "RABBITMQ_CONFIG_FILE": str(directory / "rabbitmq.conf"),
            "RABBITMQ_CONF_ENV_FILE": str(directory / "rabbitmq-env.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(directory / "enabled_plugins"),
            "RABBITMQ_MNESIA_BASE": str(directory / "mnesia"),
            "RABBITMQ_LOG_BASE": str(directory / "log"),
            "RABBITMQ_FEATURE_FLAGS_FILE": str(directory / "feature_flags"),
            "RABBITMQ_PID_FILE": str(directory / "pid"),
            # Distribution on loopback only (the system's env file says so for its own node).
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
            OWNER: str(os.getpid()),
        }
        with open(directory / "console.log", "ab") as console:
            node.process = subprocess.Popen(
                [RABBITMQ_SERVER],
                env=environment,
                stdin=subprocess.DEVNULL,
                stdout=console,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C in the terminal is for pytest, whose teardown stops the nodes
            )

    async def _reap(self, node: Node, within: float = 30, *, kill: bool = False) -> None:
        """Wait until the node's VM and the script that started it are gone; with ``kill``, SIGKILL whatever of them
        is still there each time it looks (a VM that appeared after the kill — its node was starting — included)."""
        deadline = time.monotonic() + within
        while node.name in (beams := self._beams()) or (node.process is not None and node.process.poll() is None):
            if kill:
                with contextlib.suppress(ProcessLookupError):
                    if node.name in beams:
                        os.kill(beams[node.name], signal.SIGKILL)
                    elif node.process is not None:
                        os.killpg(node.process.pid, signal.SIGKILL)  # its own session (start_new_session)
            if time.monotonic() > deadline:
                if node.process is not None:
                    node.process.kill()
                raise TimeoutError(f"{node.name} did not go away in {within} s")
            await asyncio.sleep(0.05)
        node.process = None

    def _beams(self) -> dict[str, int]:
        """Node name → pid of each of this cluster's Erlang VMs alive now."""
        found = {}
        for pid, environment in _beam_environments():
            base = environment.get("RABBITMQ_MNESIA_BASE", "")
            if base.startswith(f"{self.base}/"):
                found[environment.get("RABBITMQ_NODENAME", "")] = pid
        return found

    def _node(self, name: str) -> Node:
        for node in self._nodes:
            if node.name == name:
                return node
        raise KeyError(f"no node {name!r} in {self.nodes}")

    def _any_running(self) -> str:
        running = self.running_nodes()
        assert running, "no node of the cluster is running"
        return running[0]

    @staticmethod
    async def _accepts(port: int) -> None:
        _, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 2)
        writer.close()


def reap_orphans() -> None:
    """Kill the nodes, and remove the files, of clusters whose test run died without tearing them down."""
    for pid, environment in _beam_environments():
        owner = environment.get(OWNER)
        if owner and not _alive(int(owner)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            base = Path(environment.get("RABBITMQ_MNESIA_BASE", "")).parent.parent
            if base.name.startswith(_PREFIX):
                shutil.rmtree(base, ignore_errors=True)


def _environment() -> dict[str, str]:
    """This process's environment without RabbitMQ's and Erlang's variables, which would configure the nodes."""
    return {name: value for name, value in os.environ.items() if not name.startswith(("RABBITMQ_", "ERL_"))}


def _beam_environments() -> list[tuple[int, dict[str, str]]]:
    """(pid, environment) of every Erlang VM on the machine that we may read."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if not (entry / "exe").resolve().name.startswith("beam"):
                continue
            raw = (entry / "environ").read_bytes()
        except OSError:
            continue
        pairs = (item.partition(b"=") for item in raw.split(b"\0") if item)
        found.append(
            (int(entry.name), {key.decode(errors="replace"): value.decode(errors="replace") for key, _, value in pairs})
        )
    return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True

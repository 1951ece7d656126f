"""`upsell-stream kafka start|stop|status`: a local Kafka (KRaft) for development.

The broker is a plain Java classpath that Maven downloads once per user into the cache
directory; every data directory then holds one broker's configuration, data, logs and pid
(`--brokers N`: N of them, in kafka/node-1 .. node-N, one combined broker and controller
each). Exit codes: 0 done, 1 failed (status: some brokers of a cluster down), 2 unusable
address or broker count, 3 (status) not running.
"""

from __future__ import annotations

import errno
import fcntl
import ipaddress
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from stream_app.runtime.kafka_clients import (
    kafka_python_config,
    quiet_kafka_logs,
    refused_login,
    refused_message,
    watch_auth,
)
from stream_app.settings import Secret, Settings

KAFKA_VERSION = "4.1.1"
# The log4j-core release that kafka_2.13:4.1.1 pulls in; its slf4j 1.x bridge must match.
LOG4J_VERSION = "2.24.3"
START_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 30.0
JAVA_HINT = "Java 17+ is needed: apt-get install openjdk-17-jre-headless"
MAVEN_HINT = "Maven is needed to download the broker once: apt-get install maven"


class LocalKafkaError(Exception):
    """Why the local broker could not be started or stopped, in one line."""


class UsageError(LocalKafkaError):
    """The command asks for what no local broker can be (exit code 2)."""


class AddressError(UsageError):
    """KAFKA_BOOTSTRAP_SERVERS names no address a local broker may listen on."""


# -- pure parts ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ScramUser:
    """The one SCRAM user of a local broker that requires SASL: the clients' own."""

    mechanism: str
    name: str
    password: Secret

    @property
    def listing(self) -> str:
        """How the format step's record names it (no password)."""
        return f"{self.mechanism} {self.name}"


SCRAM_MECHANISMS = ("SCRAM-SHA-256", "SCRAM-SHA-512")
# Characters the JAAS line, the properties file and StorageTool's --add-scram all take as
# they are; the password travels inside double quotes in each.
_UNSAFE_IN_CREDENTIALS = re.compile(r'["\\\n\r,\]\[=]')


def scram_user(settings: Settings) -> ScramUser | None:
    """With KAFKA_SECURITY_PROTOCOL=SASL_PLAINTEXT the local broker requires SASL/SCRAM,
    and its user is the one the clients log in as (KAFKA_SASL_USERNAME/PASSWORD)."""
    security = settings.security
    if security.protocol == "PLAINTEXT":
        return None
    if security.protocol != "SASL_PLAINTEXT" or security.sasl_mechanism not in SCRAM_MECHANISMS:
        raise LocalKafkaError(
            f"the local broker speaks PLAINTEXT, or SASL_PLAINTEXT with "
            f"{' or '.join(SCRAM_MECHANISMS)}; KAFKA_SECURITY_PROTOCOL={security.protocol} "
            f"with KAFKA_SASL_MECHANISM={security.sasl_mechanism} needs a real cluster"
        )
    assert security.username is not None
    if _UNSAFE_IN_CREDENTIALS.search(security.username) or _UNSAFE_IN_CREDENTIALS.search(
        security.password.value
    ):
        raise LocalKafkaError(
            "for the local broker, KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD must not hold "
            "quotes, backslashes, commas, brackets, '=' or line breaks"
        )
    return ScramUser(security.sasl_mechanism, security.username, security.password)


@dataclass(frozen=True)
class Address:
    host: str
    port: int

    @property
    def controller_port(self) -> int:
        return self.port + 1

    def netloc(self, port: int | None = None) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port if port is None else port}"

    def __str__(self) -> str:
        return self.netloc()


def parse_loopback_address(bootstrap: str) -> Address:
    """The single loopback host:port a local broker may listen on, or LocalKafkaError."""
    text = bootstrap.strip()
    if not text or "," in text:
        raise AddressError(
            f"the local broker needs one host:port in KAFKA_BOOTSTRAP_SERVERS, got {text!r}"
        )
    match = re.fullmatch(
        r"\[(?P<v6>[^\]]+)\](?::(?P<p6>\d+))?|(?P<host>[^:]+)(?::(?P<port>\d+))?", text
    )
    if match is None:
        raise AddressError(f"KAFKA_BOOTSTRAP_SERVERS: {text!r} is not host:port")
    host = match["v6"] or match["host"]
    raw_port = match["p6"] or match["port"]
    # Kafka clients fall back to 9092 too when the port is left out.
    port = int(raw_port) if raw_port else 9092
    if host == "localhost":
        # Bind where "localhost" surely resolves, whatever the IPv6 setup.
        host = "127.0.0.1"
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise AddressError(
            f"the local broker only listens on loopback (127.0.0.1, localhost, ::1), "
            f"not on {text!r}: point KAFKA_BOOTSTRAP_SERVERS at e.g. 127.0.0.1:9092"
        )
    if not 1 <= port < 65535:
        raise AddressError(
            f"KAFKA_BOOTSTRAP_SERVERS: port {port} is unusable (the controller takes port + 1)"
        )
    return Address(host, port)


MAX_BROKERS = 9


@dataclass(frozen=True)
class Layout:
    """Where the nodes of a local cluster listen. Node k (1 .. size) takes port
    first.port + 2 (k - 1) for clients and the port after it for its controller, so the
    first node is where KAFKA_BOOTSTRAP_SERVERS points, as with a single broker."""

    first: Address
    size: int = 1

    def __post_init__(self) -> None:
        if not 1 <= self.size <= MAX_BROKERS:
            raise UsageError(f"--brokers takes 1 to {MAX_BROKERS}, not {self.size}")
        last = self.address(self.size).controller_port
        if last > 65535:
            raise AddressError(
                f"KAFKA_BOOTSTRAP_SERVERS: {self.size} brokers from port {self.first.port} "
                f"need ports up to {last}; pick a lower port"
            )

    @property
    def node_ids(self) -> range:
        return range(1, self.size + 1)

    def address(self, node_id: int) -> Address:
        return Address(self.first.host, self.first.port + 2 * (node_id - 1))

    @property
    def voters(self) -> str:
        return ",".join(
            f"{node}@{self.address(node).netloc(self.address(node).controller_port)}"
            for node in self.node_ids
        )

    @property
    def replication(self) -> int:
        """Of Kafka's own topics (group offsets, transactions): as the service's default."""
        return min(3, self.size)


def server_properties(
    address: Address,
    log_dir: Path,
    sasl: ScramUser | None = None,
    layout: Layout | None = None,
    node_id: int = 1,
) -> str:
    """One node's properties; `address` is the node's own, `layout` its cluster's."""
    layout = layout or Layout(address)
    controller = address.netloc(address.controller_port)
    # The controller listener stays PLAINTEXT on loopback (port + 1); clients never use it.
    listener = "PLAINTEXT" if sasl is None else "SASL_PLAINTEXT"
    lines = [
        "# Written by `upsell-stream kafka start` at every start: edits are overwritten.",
        "process.roles=broker,controller",
        f"node.id={node_id}",
        f"controller.quorum.voters={layout.voters}",
        f"listeners={listener}://{address},CONTROLLER://{controller}",
        f"advertised.listeners={listener}://{address}",
        f"listener.security.protocol.map={listener}:{listener},CONTROLLER:PLAINTEXT",
        "controller.listener.names=CONTROLLER",
        f"inter.broker.listener.name={listener}",
    ]
    if sasl is not None:
        mechanism = sasl.mechanism
        lines += [
            f"sasl.enabled.mechanisms={mechanism}",
            f"sasl.mechanism.inter.broker.protocol={mechanism}",
            # The broker logs in as the same user (Kafka prints this setting as [hidden]).
            f"listener.name.sasl_plaintext.{mechanism.lower()}.sasl.jaas.config="
            "org.apache.kafka.common.security.scram.ScramLoginModule required "
            f'username="{sasl.name}" password="{sasl.password.value}";',
        ]
    replicas = layout.replication
    min_isr = max(1, replicas - 1)
    lines += [
        f"log.dirs={log_dir}",
        "num.partitions=1",
        # One broker: internal topics cannot have more replicas than that. A cluster keeps
        # them, and whatever else it creates, on up to 3 brokers and writable with one lost.
        f"offsets.topic.replication.factor={replicas}",
        f"transaction.state.log.replication.factor={replicas}",
        f"transaction.state.log.min.isr={min_isr}",
        f"share.coordinator.state.topic.replication.factor={replicas}",
        f"share.coordinator.state.topic.min.isr={min_isr}",
    ]
    if layout.size > 1:
        lines += [
            f"default.replication.factor={replicas}",
            f"min.insync.replicas={min_isr}",
        ]
    lines += [
        # Tests and workers join groups often; do not make each first join wait 3 s.
        "group.initial.rebalance.delay.ms=0",
    ]
    return "\n".join(lines) + "\n"


def log4j2_properties(log_file: Path) -> str:
    pattern = "[%d] %p %m (%c)%n"
    lines = [
        "status = warn",
        "name = upsell-stream-local-kafka",
        "appender.file.type = RollingFile",
        "appender.file.name = FILE",
        f"appender.file.fileName = {log_file}",
        f"appender.file.filePattern = {log_file}.%i",
        "appender.file.layout.type = PatternLayout",
        f"appender.file.layout.pattern = {pattern}",
        "appender.file.policies.type = Policies",
        "appender.file.policies.size.type = SizeBasedTriggeringPolicy",
        "appender.file.policies.size.size = 50MB",
        "appender.file.strategy.type = DefaultRolloverStrategy",
        "appender.file.strategy.max = 3",
        # The console goes to the stdout file: errors only, the details are in the log file.
        "appender.console.type = Console",
        "appender.console.name = CONSOLE",
        "appender.console.layout.type = PatternLayout",
        f"appender.console.layout.pattern = {pattern}",
        "appender.console.filter.threshold.type = ThresholdFilter",
        "appender.console.filter.threshold.level = error",
        "rootLogger.level = info",
        "rootLogger.appenderRef.file.ref = FILE",
        "rootLogger.appenderRef.console.ref = CONSOLE",
    ]
    return "\n".join(lines) + "\n"


def pom_xml() -> str:
    def dependency(group: str, artifact: str, version: str) -> str:
        return (
            f"    <dependency><groupId>{group}</groupId><artifactId>{artifact}</artifactId>"
            f"<version>{version}</version></dependency>"
        )

    return "\n".join(
        [
            '<project xmlns="http://maven.apache.org/POM/4.0.0">',
            "  <modelVersion>4.0.0</modelVersion>",
            "  <groupId>local.upsell-stream</groupId>",
            "  <artifactId>kafka-broker-classpath</artifactId>",
            "  <version>1</version>",
            "  <packaging>pom</packaging>",
            "  <dependencies>",
            dependency("org.apache.kafka", "kafka_2.13", KAFKA_VERSION),
            # The broker jars carry no slf4j binding: without this one it logs nothing.
            dependency("org.apache.logging.log4j", "log4j-slf4j-impl", LOG4J_VERSION),
            "  </dependencies>",
            "</project>",
            "",
        ]
    )


def java_major_version(version_output: str) -> int | None:
    """17 from `openjdk version "17.0.15"`, 8 from `java version "1.8.0_392"`."""
    match = re.search(r'version "(\d+)(?:\.(\d+))?', version_output)
    if match is None:
        return None
    major = int(match[1])
    return int(match[2] or 0) if major == 1 else major


@dataclass(frozen=True)
class BrokerPaths:
    root: Path

    @classmethod
    def under(cls, data_dir: Path) -> BrokerPaths:
        # Absolute, so that the broker's command line names the data dir unambiguously.
        return cls(data_dir.resolve() / "kafka")

    @property
    def properties(self) -> Path:
        return self.root / "server.properties"

    @property
    def log4j(self) -> Path:
        return self.root / "log4j2.properties"

    @property
    def log_dir(self) -> Path:
        return self.root / "kraft-logs"

    @property
    def pid_file(self) -> Path:
        return self.root / "broker.pid"

    @property
    def log_file(self) -> Path:
        return self.root / "broker.log"

    @property
    def out_file(self) -> Path:
        return self.root / "broker.out"

    @property
    def lock_file(self) -> Path:
        return self.root / ".lock"

    @property
    def scram_users(self) -> Path:
        """The SCRAM users the log directory was formatted with, one per line, no password."""
        return self.root / "scram-users"

    def node(self, node_id: int) -> BrokerPaths:
        """The files of node `node_id` of a cluster started under this data dir."""
        return BrokerPaths(self.root / f"node-{node_id}")

    def nodes(self, layout: Layout) -> list[tuple[int, BrokerPaths, Address]]:
        """Each node of the layout: its id, files and address. A single broker keeps the
        files it always had, directly under kafka/."""
        if layout.size == 1:
            return [(1, self, layout.first)]
        return [(node, self.node(node), layout.address(node)) for node in layout.node_ids]


# -- processes ----------------------------------------------------------------------------


def _cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def is_alive(pid: int) -> bool:
    """True while /proc/<pid> is a live process; an unreaped zombie counts as gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[:1] not in (["Z"], ["X"])


def _is_our_broker(pid: int, paths: BrokerPaths) -> bool:
    args = _cmdline(pid)
    return "kafka.Kafka" in args and str(paths.properties) in args and is_alive(pid)


def broker_pids(paths: BrokerPaths) -> list[int]:
    """Every live broker process of this data dir, whether or not the pid file knows it."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and _is_our_broker(int(entry.name), paths):
            pids.append(int(entry.name))
    return sorted(pids)


def local_broker_pids(root: BrokerPaths) -> dict[int, Path]:
    """Every live broker process of this data dir, single or cluster node: its properties."""
    found: dict[int, Path] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        args = _cmdline(int(entry.name))
        if "kafka.Kafka" not in args:
            continue
        properties = Path(args[-1])
        node_dir = properties.parent
        of_root = node_dir == root.root or (
            node_dir.parent == root.root and node_dir.name.startswith("node-")
        )
        if properties.name == "server.properties" and of_root and is_alive(int(entry.name)):
            found[int(entry.name)] = properties
    return found


def running_pid(paths: BrokerPaths) -> int | None:
    try:
        pid = int(paths.pid_file.read_text().strip())
    except (OSError, ValueError):
        pid = 0
    if pid and _is_our_broker(pid, paths):
        return pid
    pids = broker_pids(paths)
    return pids[0] if pids else None


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Serialise two commands working on the same files (two test sessions, say)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _port_taken(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        # Like the broker itself, ignore connections still in TIME_WAIT.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as error:
            return error.errno == errno.EADDRINUSE
    return False


def _port_open(address: Address) -> bool:
    try:
        with socket.create_connection((address.host, address.port), timeout=1.0):
            return True
    except OSError:
        return False


READINESS_GROUP = "upsell-stream-readiness-check"


def _answers(address: Address, timeout_s: float, settings: Settings | None = None) -> int:
    """How many brokers the cluster's metadata lists (0 until it serves a metadata request:
    an open port is not enough)."""
    from kafka.admin import KafkaAdminClient

    timeout_ms = max(1000, int(timeout_s * 1000))
    # As the clients will connect: PLAINTEXT, or SASL with their credentials.
    config = {**kafka_python_config(settings or Settings()), "bootstrap_servers": [str(address)]}
    with quiet_kafka_logs(), watch_auth() as watch:
        try:
            admin = KafkaAdminClient(
                **config, bootstrap_timeout_ms=timeout_ms, request_timeout_ms=timeout_ms
            )
        except Exception:
            if settings is not None and (watch.refused or refused_login(settings)):
                raise LocalKafkaError(
                    f"{refused_message(settings)} (the local broker's SCRAM "
                    "user was set when its data directory was first formatted)"
                ) from None
            return 0
        try:
            brokers = len(admin.describe_cluster().get("brokers") or [])
            if brokers:
                # A consumer group's first coordinator lookup fails while the broker
                # creates its offsets topic, which the worker's client logs as an ERROR:
                # the broker is ready for the worker once a coordinator answers.
                admin.describe_groups([READINESS_GROUP])
            return brokers
        except Exception:
            return 0
        finally:
            admin.close()


def _terminate(pids: list[int], timeout_s: float = STOP_TIMEOUT_S) -> list[int]:
    """SIGTERM, then SIGKILL whatever is left after timeout_s; returns the survivors."""
    for sig, wait_s in ((signal.SIGTERM, timeout_s), (signal.SIGKILL, 10.0)):
        alive = [pid for pid in pids if is_alive(pid)]
        for pid in alive:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + wait_s
        while alive and time.monotonic() < deadline:
            time.sleep(0.2)
            alive = [pid for pid in alive if is_alive(pid)]
        if not alive:
            return []
    return [pid for pid in pids if is_alive(pid)]


def configured_address(properties_text: str) -> str | None:
    """The host:port a broker's server.properties advertises to clients."""
    for line in properties_text.splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "advertised.listeners":
            return value.strip().rpartition("://")[2] or None
    return None


def _running_address(paths: BrokerPaths) -> str | None:
    try:
        return configured_address(paths.properties.read_text())
    except OSError:
        return None


def _tail(path: Path, lines: int = 20) -> list[str]:
    try:
        return path.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return []


# -- the broker's classpath ---------------------------------------------------------------


def find_java() -> str:
    java = shutil.which("java")
    if java is None:
        raise LocalKafkaError(JAVA_HINT)
    try:
        probe = subprocess.run(
            [java, "-version"], capture_output=True, text=True, timeout=60, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        raise LocalKafkaError(f"{JAVA_HINT} ({java} -version failed: {error})") from None
    major = java_major_version(probe.stderr + probe.stdout)
    if major is None or major < 17:
        found = f"Java {major}" if major else "an unknown Java"
        raise LocalKafkaError(f"{JAVA_HINT} (found {found} at {java})")
    return java


def broker_classpath(cache_dir: Path) -> Path:
    """The directory of the broker's jars, downloaded with Maven the first time."""
    home = cache_dir / f"kafka-{KAFKA_VERSION}"
    libs = home / "libs"
    marker = home / "complete"
    with _locked(home / ".lock"):
        if marker.exists() and any(libs.glob("kafka_2.13-*.jar")):
            return libs
        mvn = shutil.which("mvn")
        if mvn is None:
            raise LocalKafkaError(MAVEN_HINT)
        print(
            f"downloading Kafka {KAFKA_VERSION} with Maven, once (cached in {home}) ...", flush=True
        )
        marker.unlink(missing_ok=True)
        partial = home / "libs.partial"
        # Whatever an interrupted download left is redone from scratch.
        shutil.rmtree(partial, ignore_errors=True)
        shutil.rmtree(libs, ignore_errors=True)
        (home / "pom.xml").write_text(pom_xml())
        command = [
            mvn,
            "-B",
            "-q",
            "-f",
            str(home / "pom.xml"),
            "dependency:copy-dependencies",
            "-DincludeScope=runtime",
            f"-DoutputDirectory={partial}",
        ]
        try:
            result = subprocess.run(
                command,
                cwd=home,
                capture_output=True,
                text=True,
                stdin=subprocess.DEVNULL,
                timeout=900,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise LocalKafkaError("Maven did not finish downloading the broker in 15 min") from None
        if result.returncode != 0 or not any(partial.glob("kafka_2.13-*.jar")):
            output = (result.stdout + result.stderr).splitlines()
            errors = [line for line in output if "ERROR" in line] or output or ["no output"]
            raise LocalKafkaError(
                f"Maven could not download Kafka {KAFKA_VERSION} (exit {result.returncode}): "
                f"{errors[0].strip()[:300]}"
            )
        partial.rename(libs)
        marker.write_text(f"{sum(1 for _ in libs.glob('*.jar'))} jars\n")
        return libs


# -- commands -----------------------------------------------------------------------------


def _java_command(java: str, libs: Path, paths: BrokerPaths, *main: str) -> list[str]:
    # Java expands the classpath wildcard itself: no shell involved.
    return [
        java,
        "-Xmx512m",
        # A broker for development, tests and the bench, on a machine of 2 cores that it
        # shares with the workers. Its CPU during a worker run of bench/run.py was mostly
        # the JVM's own: C2, the optimizing compiler, took 0.5-0.9 s of it (more than
        # the request handlers, 0.25 s for 57,560 events and 0.75 s for 300,000), and a
        # G1 concurrent cycle 0.35 s more in some runs. With the quick compiler alone
        # and the serial collector the handlers take the same time and the broker's
        # CPU per event halves (--quick, 4 runs alternated: 18.5 -> 8 us median; at
        # 300,000 events 7 -> 4 us).
        "-XX:TieredStopAtLevel=1",
        "-XX:+UseSerialGC",
        f"-Dlog4j2.configurationFile={paths.log4j}",
        "-cp",
        f"{libs}/*",
        *main,
    ]


def _write_private(path: Path, text: str) -> None:
    """Readable by the owner only: with SASL the file holds the broker's password."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(descriptor, 0o600)  # an older file keeps its mode through O_CREAT
    with os.fdopen(descriptor, "w") as handle:
        handle.write(text)


def _format_storage(
    java: str, libs: Path, paths: BrokerPaths, sasl: ScramUser | None, cluster_id: str | None = None
) -> None:
    if (paths.log_dir / "meta.properties").exists():
        if sasl is not None and sasl.listing not in _formatted_users(paths):
            raise LocalKafkaError(
                f"{paths.log_dir} was formatted without the SCRAM user {sasl.name!r} "
                f"({sasl.mechanism}): users are added when a data directory is first "
                "formatted, so use a fresh UPSELL_DATA_DIR for a broker with SASL"
            )
        return
    if cluster_id is None:
        cluster_id = _random_cluster_id(java, libs, paths)
    users = (
        []
        if sasl is None
        else [
            # On the format step's command line for its few seconds: StorageTool takes users
            # no other way.
            "--add-scram",
            f'{sasl.mechanism}=[name={sasl.name},password="{sasl.password.value}"]',
        ]
    )
    _storage_tool(
        java, libs, paths, "format", "-t", cluster_id, "-c", str(paths.properties), *users
    )
    paths.scram_users.write_text("" if sasl is None else sasl.listing + "\n")


def _storage_tool(java: str, libs: Path, paths: BrokerPaths, *args: str) -> str:
    command = _java_command(java, libs, paths, "kafka.tools.StorageTool", *args)
    result = subprocess.run(
        command, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=180, check=False
    )
    if result.returncode != 0:
        last = (result.stderr + result.stdout).strip().splitlines() or ["no output"]
        raise LocalKafkaError(f"formatting {paths.log_dir} failed: {last[-1][:300]}")
    return result.stdout.strip()


def _random_cluster_id(java: str, libs: Path, paths: BrokerPaths) -> str:
    return _storage_tool(java, libs, paths, "random-uuid").splitlines()[-1].strip()


def formatted_cluster_id(meta_properties: str) -> str | None:
    for line in meta_properties.splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "cluster.id":
            return value.strip() or None
    return None


def _cluster_id(nodes: list[BrokerPaths]) -> str | None:
    """The id a node of the cluster was formatted with already (all share one)."""
    for paths in nodes:
        try:
            found = formatted_cluster_id((paths.log_dir / "meta.properties").read_text())
        except OSError:
            continue
        if found:
            return found
    return None


def _formatted_users(paths: BrokerPaths) -> list[str]:
    try:
        return paths.scram_users.read_text().splitlines()
    except OSError:
        return []


def _launch(java: str, libs: Path, paths: BrokerPaths) -> subprocess.Popen[bytes]:
    command = _java_command(java, libs, paths, "kafka.Kafka", str(paths.properties))
    with paths.out_file.open("wb") as out:
        # A session of its own: Ctrl-C in the terminal that started it must not stop it.
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=paths.root,
            start_new_session=True,
        )
    paths.pid_file.write_text(f"{process.pid}\n")
    return process


def _report_failure(paths: BrokerPaths, why: str) -> None:
    print(f"upsell-stream kafka: {why}", file=sys.stderr)
    for path in (paths.log_file, paths.out_file):
        lines = _tail(path)
        if lines:
            print(f"--- last lines of {path}:", file=sys.stderr)
            print("\n".join(lines), file=sys.stderr)


def _wait_until_answering(
    layout: Layout,
    pids: list[int],
    deadline: float,
    processes: list[subprocess.Popen[bytes]] | None = None,
    settings: Settings | None = None,
) -> str | None:
    """None once every node answers a metadata request listing all the brokers, else why
    not. Asked of each node: a broker killed a moment ago stays listed for seconds."""
    brokers = layout.size
    address = layout.first
    while time.monotonic() < deadline:
        # Our own children must be reaped through Popen, or they linger as zombies.
        for process in processes or []:
            if process.poll() is not None:
                return f"the broker process {process.pid} exited with code {process.returncode}"
        if not processes and not all(is_alive(pid) for pid in pids):
            return "the broker process exited"
        if all(
            _port_open(layout.address(node))
            and _answers(layout.address(node), min(5.0, deadline - time.monotonic()), settings)
            >= brokers
            for node in layout.node_ids
        ):
            return None
        time.sleep(0.5)
    what = "the broker" if brokers == 1 else f"a cluster of {brokers} brokers"
    return f"{what} did not answer on {address} within {START_TIMEOUT_S:.0f} s"


def _describe(layout: Layout) -> str:
    if layout.size == 1:
        return str(layout.first)
    ports = ", ".join(str(layout.address(node).port) for node in layout.node_ids)
    return f"{layout.first.host} ports {ports}"


# Ports below this one need root to listen on; a typo there is likelier than a wish.
FIRST_UNPRIVILEGED_PORT = 1024


def start(settings: Settings, brokers: int = 1, allow_privileged_port: bool = False) -> int:
    layout = Layout(parse_loopback_address(settings.bootstrap_servers), brokers)
    if layout.first.port < FIRST_UNPRIVILEGED_PORT and not allow_privileged_port:
        raise AddressError(
            f"KAFKA_BOOTSTRAP_SERVERS: port {layout.first.port} is below "
            f"{FIRST_UNPRIVILEGED_PORT} (privileged, needs root); use a port from "
            f"{FIRST_UNPRIVILEGED_PORT} to 65534, or pass --allow-privileged-port"
        )
    address = layout.first
    root = BrokerPaths.under(settings.data_dir)
    nodes = root.nodes(layout)
    began = time.monotonic()
    with _locked(root.lock_file):
        ours = {paths.properties for _, paths, _ in nodes}
        running = local_broker_pids(root)
        strangers = sorted(pid for pid, properties in running.items() if properties not in ours)
        if strangers:
            what = "a single broker" if layout.size > 1 else "a cluster"
            raise LocalKafkaError(
                f"{what} of {root.root} runs already (pid {', '.join(map(str, strangers))}); "
                "`upsell-stream kafka stop` it first"
            )
        pids = {node: running_pid(paths) for node, paths, _ in nodes}
        live = [pid for pid in pids.values() if pid is not None]
        if live:
            running_on = _running_address(nodes[0][1])
            if running_on is not None and running_on != str(address):
                raise LocalKafkaError(
                    f"the broker of {root.root} (pid {live[0]}) already runs on {running_on}, "
                    f"not {address}; `upsell-stream kafka stop` it first"
                )
        if len(live) == layout.size:
            why = _wait_until_answering(layout, live, began + START_TIMEOUT_S, settings=settings)
            if why is not None:
                raise LocalKafkaError(
                    f"{'a broker' if layout.size == 1 else 'a cluster'} of {root.root} "
                    f"(pid {', '.join(map(str, live))}) runs but does not answer: {why}; "
                    f"see {nodes[0][1].log_file}, or `upsell-stream kafka stop` it"
                )
            print(f"already running (pid {', '.join(map(str, live))}) on {_describe(layout)}")
            return 0
        missing = [
            (node, paths, node_address) for node, paths, node_address in nodes if pids[node] is None
        ]
        for _, paths, node_address in missing:
            paths.pid_file.unlink(missing_ok=True)
            for port in (node_address.port, node_address.controller_port):
                if _port_taken(node_address.host, port):
                    raise LocalKafkaError(
                        f"{node_address.netloc(port)} is already in use by another program; "
                        "stop it or set KAFKA_BOOTSTRAP_SERVERS to another port (each broker "
                        "takes two ports: its own and its controller's, port + 1)"
                    )
        sasl = scram_user(settings)
        java = find_java()
        libs = broker_classpath(settings.cache_dir)
        for node, paths, node_address in missing:
            paths.log_dir.mkdir(parents=True, exist_ok=True)
            _write_private(
                paths.properties, server_properties(node_address, paths.log_dir, sasl, layout, node)
            )
            paths.log4j.write_text(log4j2_properties(paths.log_file))
        cluster_id = _cluster_id([paths for _, paths, _ in nodes])
        if cluster_id is None and layout.size > 1:
            # Every node of a cluster is formatted with the same id.
            cluster_id = _random_cluster_id(java, libs, missing[0][1])
        for _, paths, _ in missing:
            _format_storage(java, libs, paths, sasl, cluster_id)
        # All at once: a cluster's controllers elect a leader only once most of them run.
        processes = [_launch(java, libs, paths) for _, paths, _ in missing]
        launched = [process.pid for process in processes]
        try:
            why = _wait_until_answering(
                layout, launched, time.monotonic() + START_TIMEOUT_S, processes, settings
            )
        except (KeyboardInterrupt, LocalKafkaError):
            _terminate(launched)
            for _, paths, _ in missing:
                paths.pid_file.unlink(missing_ok=True)
            raise
        if why is not None:
            _report_failure(missing[0][1], why)
            _terminate(launched)
            for _, paths, _ in missing:
                paths.pid_file.unlink(missing_ok=True)
            return 1
    every = sorted([*live, *launched])
    what = (
        f"Kafka {KAFKA_VERSION}"
        if layout.size == 1
        else (f"a cluster of {layout.size} Kafka {KAFKA_VERSION} brokers")
    )
    print(
        f"started {what} (pid {', '.join(map(str, every))}) on {_describe(layout)} in "
        f"{time.monotonic() - began:.1f} s; data and logs in {root.root}"
    )
    return 0


def stop(settings: Settings) -> int:
    root = BrokerPaths.under(settings.data_dir)
    if not root.root.exists():
        print("not running")
        return 0
    with _locked(root.lock_file):
        running = local_broker_pids(root)
        pids = sorted(running)
        if not pids:
            root.pid_file.unlink(missing_ok=True)
            print("not running")
            return 0
        survivors = _terminate(pids)
        if survivors:
            raise LocalKafkaError(f"broker process {survivors} survived SIGKILL")
        for properties in running.values():
            (properties.parent / "broker.pid").unlink(missing_ok=True)
    print(f"stopped (pid {', '.join(map(str, pids))})")
    return 0


def _status_line(paths: BrokerPaths, pid: int, fallback: str) -> str:
    # Where it really listens: the settings may have changed since it started.
    running_on = _running_address(paths) or fallback
    try:
        address = parse_loopback_address(running_on)
        note = "" if _port_open(address) else " (starting: port not open yet)"
    except AddressError:
        note = ""
    return f"running (pid {pid}) on {running_on}{note}"


def status(settings: Settings) -> int:
    root = BrokerPaths.under(settings.data_dir)
    running = local_broker_pids(root)
    if not running:
        print("not running")
        return 3
    if root.properties in running.values():
        pid = next(pid for pid, properties in running.items() if properties == root.properties)
        print(_status_line(root, pid, settings.bootstrap_servers))
        return 0
    # A cluster: every node it was started with, down ones included.
    by_node = {properties.parent: pid for pid, properties in running.items()}
    node_dirs = sorted(
        (properties.parent for properties in root.root.glob("node-*/server.properties")),
        key=lambda path: int(path.name.removeprefix("node-") or 0),
    )
    for node_dir in node_dirs:
        node_pid = by_node.get(node_dir)
        state = (
            "not running"
            if node_pid is None
            else _status_line(BrokerPaths(node_dir), node_pid, "?")
        )
        print(f"{node_dir.name}: {state}")
    return 0 if len(by_node) == len(node_dirs) else 1


def run(
    action: str, settings: Settings, brokers: int = 1, allow_privileged_port: bool = False
) -> int:
    commands = {
        "start": lambda: start(settings, brokers, allow_privileged_port),
        "stop": lambda: stop(settings),
        "status": lambda: status(settings),
    }
    if action not in commands:
        print(f"upsell-stream kafka: unknown action {action!r}", file=sys.stderr)
        return 2
    try:
        return commands[action]()
    except LocalKafkaError as error:
        print(f"upsell-stream kafka: {error}", file=sys.stderr)
        return 2 if isinstance(error, UsageError) else 1
    except KeyboardInterrupt:
        print("upsell-stream kafka: interrupted", file=sys.stderr)
        return 130

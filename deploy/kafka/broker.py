"""A single-node KRaft Kafka broker (broker and controller in one JVM) on 127.0.0.1.

One broker needs a few settings that a cluster would not: every internal topic with replication
factor 1 and min ISR 1 (transactions and consumer offsets would otherwise wait for replicas that
never come), and no initial rebalance delay (tests and demos join groups often).
"""

from __future__ import annotations

import base64
import os
import secrets
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from deploy.kafka.dist import KAFKA_VERSION, libs_dir, require_tool
from rarecvr import kafka_auth

NODE_ID = 1

LOG4J2 = """\
status = warn
appender.out.type = Console
appender.out.name = out
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = {level}
rootLogger.appenderRef.out.ref = out
logger.kafka.name = kafka
logger.kafka.level = {level}
logger.state.name = state.change.logger
logger.state.level = WARN
"""


class BrokerError(RuntimeError):
    """The broker could not be started or stopped; the message says why and what to do."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_is_free(port: int) -> bool:
    """Whether a server could listen on ``port``. SO_REUSEADDR as Java's server sockets set it:
    connections of a server just stopped (in TIME_WAIT) do not keep its port."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


@dataclass(frozen=True)
class Tls:
    """What a secure broker needs: a key store with its certificate (self-signed, for
    127.0.0.1 and localhost, also the clients' CA file) and one SCRAM user."""

    keystore: Path
    keystore_password: str
    ca_file: Path
    username: str
    password_file: Path

    @property
    def password(self) -> str:
        return self.password_file.read_text().strip()

    def auth(self) -> kafka_auth.KafkaAuth:
        return kafka_auth.KafkaAuth(
            "SASL_SSL", kafka_auth.MECHANISMS[0], self.username, self.password, str(self.ca_file)
        )

    def record(self) -> dict:
        """What ``broker.json`` records, where local clients find it (the password stays in
        its own file)."""
        return {
            "protocol": "SASL_SSL",
            "mechanism": kafka_auth.MECHANISMS[0],
            "username": self.username,
            "password_file": str(self.password_file),
            "ca_file": str(self.ca_file),
        }


def make_tls(directory: Path, username: str = "rarecvr", days: int = 365) -> Tls:
    """The key store, CA file and SCRAM password of a secure broker in ``directory``, made with
    the JDK's ``keytool`` on first use and kept (readable by this user only) after that."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    tls = Tls(directory / "broker.p12", "", directory / "ca.pem", username, directory / "password")
    store_password_file = directory / "keystore-password"
    for secret in (tls.password_file, store_password_file):
        if not secret.exists():
            secret.touch(mode=0o600)
            secret.write_text(secrets.token_urlsafe(24))
    store_password = store_password_file.read_text().strip()
    if not tls.ca_file.exists():
        keytool = require_tool("keytool", "to make the secure broker's certificate")
        tls.keystore.unlink(missing_ok=True)
        common = ["-alias", "broker", "-keystore", str(tls.keystore), "-storepass", store_password]
        for args in (
            [
                "-genkeypair",
                "-keyalg",
                "RSA",
                "-keysize",
                "2048",
                "-storetype",
                "PKCS12",
                "-dname",
                "CN=localhost",
                "-ext",
                "SAN=ip:127.0.0.1,dns:localhost",
                "-ext",
                "BC:c=ca:true",
                "-validity",
                str(days),
            ],
            ["-exportcert", "-rfc", "-file", str(tls.ca_file)],
        ):
            result = subprocess.run([keytool, *args, *common], capture_output=True, text=True)
            if result.returncode != 0:
                raise BrokerError(f"keytool failed: {(result.stdout + result.stderr).strip()}")
    return Tls(tls.keystore, store_password, tls.ca_file, username, tls.password_file)


def server_properties(
    data_dir: Path, port: int, controller_port: int, tls: Tls | None = None
) -> str:
    """The broker's ``server.properties`` for one KRaft node listening on 127.0.0.1: plaintext,
    or with ``tls`` a SASL_SSL listener that takes SCRAM users (the broker itself one of them)."""
    listener = "SASL_SSL" if tls else "PLAINTEXT"
    props = {
        "process.roles": "broker,controller",
        "node.id": NODE_ID,
        "controller.quorum.voters": f"{NODE_ID}@127.0.0.1:{controller_port}",
        "listeners": f"{listener}://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
        "advertised.listeners": f"{listener}://127.0.0.1:{port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": listener,
        "listener.security.protocol.map": f"{listener}:{listener},CONTROLLER:PLAINTEXT",
        "log.dirs": data_dir / "logs",
        "num.partitions": 1,
        "default.replication.factor": 1,
        "min.insync.replicas": 1,
        "offsets.topic.replication.factor": 1,
        "offsets.topic.num.partitions": 8,
        "transaction.state.log.replication.factor": 1,
        "transaction.state.log.min.isr": 1,
        "transaction.state.log.num.partitions": 4,
        "share.coordinator.state.topic.replication.factor": 1,
        "share.coordinator.state.topic.min.isr": 1,
        "group.initial.rebalance.delay.ms": 0,
        "auto.create.topics.enable": "true",
        "log.cleaner.backoff.ms": 5000,
    }
    if tls:
        mechanism = kafka_auth.MECHANISMS[0]
        props |= {
            "sasl.enabled.mechanisms": mechanism,
            "sasl.mechanism.inter.broker.protocol": mechanism,
            f"listener.name.sasl_ssl.{mechanism.lower()}.sasl.jaas.config": (
                "org.apache.kafka.common.security.scram.ScramLoginModule required "
                f'username="{tls.username}" password="{tls.password}";'
            ),
            "ssl.keystore.location": tls.keystore,
            "ssl.keystore.type": "PKCS12",
            "ssl.keystore.password": tls.keystore_password,
            "ssl.truststore.location": tls.keystore,
            "ssl.truststore.type": "PKCS12",
            "ssl.truststore.password": tls.keystore_password,
        }
    return "".join(f"{k}={v}\n" for k, v in props.items())


def new_cluster_id() -> str:
    """A Kafka cluster id: 16 random bytes, URL-safe base64 without padding.

    Like Kafka's own ``Uuid.randomUuid``, it never starts with '-', which a command line would
    take for an option.
    """
    cluster_id = "-"
    while cluster_id.startswith("-"):
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
    return cluster_id


@dataclass
class BrokerInfo:
    """What a running broker is: recorded so other processes can find and stop it."""

    pid: int
    bootstrap: str
    port: int
    controller_port: int
    version: str
    data_dir: str
    log_file: str
    security: dict | None = None  #: how clients authenticate (``Tls.record``); None: plaintext


class Broker:
    """One Kafka server process with its data in ``data_dir``. Used as::

    with Broker(data_dir) as info:   # formats on first start, serves, stops on exit
        produce_to(info.bootstrap)
    """

    def __init__(
        self,
        data_dir: Path,
        version: str = KAFKA_VERSION,
        heap: str = "384m",
        log_level: str = "INFO",
        secure: bool = False,
    ):
        self.data_dir = Path(data_dir)
        self.secure = secure
        self.version = version
        self.heap = heap
        self.log_level = log_level
        self.process: subprocess.Popen | None = None
        self.info: BrokerInfo | None = None

    @property
    def log_file(self) -> Path:
        return self.data_dir / "server.log"

    def _java_cmd(self, libs: Path, main: str, *args: str) -> list[str]:
        java = require_tool("java", "to run the Kafka broker")
        return [
            java,
            f"-Xmx{self.heap}",
            f"-Xms{self.heap}",
            "-XX:+UseG1GC",
            "-XX:TieredStopAtLevel=1",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.data_dir / 'log4j2.properties'}",
            "-cp",
            f"{libs}/*",
            main,
            *args,
        ]

    def _ports(self, port: int | None, controller_port: int | None) -> tuple[int, int]:
        """Requested ports, else the ones this data directory used last if still free, else new."""
        for requested in (port, controller_port):
            if requested is not None and not port_is_free(requested):
                raise BrokerError(
                    f"Port {requested} on 127.0.0.1 is already taken, so the Kafka broker cannot "
                    "listen on it. Stop whatever holds it (`ss -ltnp`), or leave the port unset "
                    "to get a free one."
                )
        last = self.data_dir / "ports"
        if port is None and controller_port is None and last.exists():
            p, c = (int(x) for x in last.read_text().split())
            if port_is_free(p) and port_is_free(c):
                return p, c
        port = port or free_port()
        controller_port = controller_port or free_port()
        while controller_port == port:
            controller_port = free_port()
        last.write_text(f"{port} {controller_port}")
        return port, controller_port

    def start(
        self, port: int | None = None, controller_port: int | None = None, timeout: float = 60
    ) -> BrokerInfo:
        """Format the storage if new, start the server, and wait until it answers metadata."""
        libs = libs_dir(self.version)
        if not (libs.parent / ".complete").exists():
            raise BrokerError(
                f"The jars of Kafka {self.version} are not in {libs}: run `rarecvr kafka fetch` "
                "(or `make kafka`) first."
            )
        self.data_dir.mkdir(parents=True, exist_ok=True)
        port, controller_port = self._ports(port, controller_port)
        tls = self._tls()
        props = self.data_dir / "server.properties"
        props.touch(mode=0o600)
        props.write_text(server_properties(self.data_dir, port, controller_port, tls))
        (self.data_dir / "log4j2.properties").write_text(LOG4J2.format(level=self.log_level))
        if not (self.data_dir / "logs" / "meta.properties").exists():
            self._format(libs, props, tls)
        with open(self.log_file, "ab") as log:
            self.process = subprocess.Popen(
                self._java_cmd(libs, "kafka.Kafka", str(props)),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # survives `rarecvr kafka up` exiting, and its Ctrl-C
            )
        self.info = BrokerInfo(
            pid=self.process.pid,
            bootstrap=f"127.0.0.1:{port}",
            port=port,
            controller_port=controller_port,
            version=self.version,
            data_dir=str(self.data_dir),
            log_file=str(self.log_file),
            security=tls.record() if tls else None,
        )
        try:
            wait_until_serving(
                self.info.bootstrap,
                timeout,
                self.process,
                self.log_file,
                tls.auth() if tls else kafka_auth.KafkaAuth(),
            )
        except BrokerError:
            self.stop()
            raise
        return self.info

    def _tls(self) -> Tls | None:
        """The secure broker's files, or None for plaintext; a data directory keeps the mode it
        was formatted with (its SCRAM user is written at format time)."""
        mode = self.data_dir / "security"
        wanted = "SASL_SSL" if self.secure else "PLAINTEXT"
        formatted = (self.data_dir / "logs" / "meta.properties").exists()
        had = mode.read_text().strip() if mode.exists() else "PLAINTEXT"
        if formatted and had != wanted:
            raise BrokerError(
                f"The broker's data in {self.data_dir} was made {had}, so it cannot start "
                f"{wanted}: start it {'with' if had == 'SASL_SSL' else 'without'} --secure, "
                "or use another RARECVR_HOME."
            )
        mode.write_text(wanted)
        return make_tls(self.data_dir / "tls") if self.secure else None

    def _format(self, libs: Path, props: Path, tls: Tls | None) -> None:
        scram = (
            [
                "--add-scram",
                f"{kafka_auth.MECHANISMS[0]}=[name={tls.username},password={tls.password}]",
            ]
            if tls
            else []
        )
        cmd = self._java_cmd(
            libs,
            "kafka.tools.StorageTool",
            "format",
            f"--cluster-id={new_cluster_id()}",
            "-c",
            str(props),
            *scram,
        )
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode != 0:
            raise BrokerError(
                f"Formatting the Kafka storage in {self.data_dir / 'logs'} failed (exit "
                f"{result.returncode}):\n{(result.stdout + result.stderr).strip()[-2000:]}"
            )

    def stop(self, timeout: float = 20) -> None:
        """SIGTERM the server, then SIGKILL it if it has not exited within ``timeout``."""
        if self.process is not None:
            stop_pid(self.process.pid, timeout, self.process)
            self.process = None

    def __enter__(self) -> BrokerInfo:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def log_tail(log_file: Path, lines: int = 25) -> str:
    try:
        return "\n".join(Path(log_file).read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log written)"


def wait_until_serving(
    bootstrap: str,
    timeout: float,
    process: subprocess.Popen | None,
    log_file: Path,
    auth: kafka_auth.KafkaAuth | None = None,
) -> None:
    """Block until a metadata request to ``bootstrap`` succeeds (as ``auth``, by default the
    one clients of ``bootstrap`` use), or raise with the log's tail."""
    auth = auth or kafka_auth.auth_for(bootstrap)
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise BrokerError(
                f"The Kafka broker exited with code {process.returncode} while starting. "
                f"The end of its log ({log_file}):\n{log_tail(log_file)}"
            )
        try:
            admin = KafkaAdminClient(
                bootstrap_servers=bootstrap,
                request_timeout_ms=3000,
                client_id="rarecvr-probe",
                **auth.kafka_python(),
            )
            try:
                if admin.describe_cluster().get("brokers"):
                    return
            finally:
                admin.close()
        except (KafkaError, OSError):
            pass
        time.sleep(0.3)
    raise BrokerError(
        f"The Kafka broker at {bootstrap} did not answer a metadata request within "
        f"{timeout:.0f} s. "
        f"The end of its log ({log_file}):\n{log_tail(log_file)}"
    )


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` still runs (reaping it first if it is an exited child of ours)."""
    try:
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    except ChildProcessError:
        pass  # not our child: its parent reaps it
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stop_pid(pid: int, timeout: float, process: subprocess.Popen | None = None) -> bool:
    """SIGTERM ``pid``, SIGKILL after ``timeout``; True if it had to be killed."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None:
            if process.poll() is not None:
                return False
        elif not pid_alive(pid):
            return False
        time.sleep(0.1)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return False
    if process is not None:
        process.wait()
    return True

"""How every rarecvr Kafka client connects: plaintext, or SASL/SCRAM over TLS.

One place decides, so that Faust, aiokafka and kafka-python clients of every stage agree. The
settings come from the environment:

- ``RARECVR_KAFKA_SECURITY_PROTOCOL``: ``PLAINTEXT`` (the default) or ``SASL_SSL``.
- ``RARECVR_KAFKA_SASL_MECHANISM``: ``SCRAM-SHA-512`` (default) or ``SCRAM-SHA-256``.
- ``RARECVR_KAFKA_USERNAME`` and ``RARECVR_KAFKA_PASSWORD_FILE`` (a file holding the password;
  ``RARECVR_KAFKA_PASSWORD`` also works, but an environment is easier to leak than a file).
- ``RARECVR_KAFKA_CA_FILE``: PEM certificates that sign the broker's (default: the system's).

When ``RARECVR_KAFKA_SECURITY_PROTOCOL`` is unset and the client talks to the local broker
that ``rarecvr kafka up --secure`` started, the settings that broker recorded are used.

>>> KafkaAuth().kafka_python()
{}
>>> auth = KafkaAuth("SASL_SSL", username="rarecvr", password="pw")
>>> sorted(auth.kafka_python())
['sasl_mechanism', 'sasl_plain_password', 'sasl_plain_username', 'security_protocol']
>>> auth
KafkaAuth(protocol='SASL_SSL', mechanism='SCRAM-SHA-512', username='rarecvr', ca_file=None)
"""

from __future__ import annotations

import asyncio
import json
import os
import ssl
from dataclasses import dataclass, field
from pathlib import Path

from rarecvr import settings

PROTOCOLS = ("PLAINTEXT", "SASL_SSL")
MECHANISMS = ("SCRAM-SHA-512", "SCRAM-SHA-256")


class KafkaAuthError(RuntimeError):
    """The client cannot connect as configured; the message says what is wrong."""


@dataclass(frozen=True)
class KafkaAuth:
    protocol: str = "PLAINTEXT"
    mechanism: str = "SCRAM-SHA-512"
    username: str = ""
    password: str = field(default="", repr=False)
    ca_file: str | None = None

    def __post_init__(self):
        if self.protocol not in PROTOCOLS:
            raise KafkaAuthError(
                f"RARECVR_KAFKA_SECURITY_PROTOCOL is {self.protocol!r}; use one of {PROTOCOLS}"
            )
        if self.mechanism not in MECHANISMS:
            raise KafkaAuthError(
                f"RARECVR_KAFKA_SASL_MECHANISM is {self.mechanism!r}; use one of {MECHANISMS}"
            )
        if self.secure and not (self.username and self.password):
            raise KafkaAuthError(
                "SASL_SSL needs a user and a password: set RARECVR_KAFKA_USERNAME and "
                "RARECVR_KAFKA_PASSWORD_FILE"
            )

    @property
    def secure(self) -> bool:
        return self.protocol == "SASL_SSL"

    def ssl_context(self) -> ssl.SSLContext:
        """TLS that verifies the broker's certificate and host name against ``ca_file``."""
        return ssl.create_default_context(cafile=self.ca_file)

    def _sasl(self) -> dict:
        return {
            "security_protocol": self.protocol,
            "sasl_mechanism": self.mechanism,
            "sasl_plain_username": self.username,
            "sasl_plain_password": self.password,
        }

    def kafka_python(self) -> dict:
        """Keyword arguments for kafka-python's consumers, producers and admin clients."""
        if not self.secure:
            return {}
        return self._sasl() | ({"ssl_cafile": self.ca_file} if self.ca_file else {})

    def aiokafka(self) -> dict:
        """Keyword arguments for aiokafka's consumers, producers and admin clients."""
        return self._sasl() | {"ssl_context": self.ssl_context()} if self.secure else {}

    def faust(self) -> dict:
        """Keyword arguments for ``faust.App``."""
        if not self.secure:
            return {}
        from faust import SASLCredentials

        credentials = SASLCredentials(
            username=self.username,
            password=self.password,
            ssl_context=self.ssl_context(),
            mechanism=self.mechanism,
        )
        return {"broker_credentials": credentials}


def from_env(environ=os.environ) -> KafkaAuth | None:
    """The settings the environment gives, or None when it gives no protocol."""
    protocol = environ.get("RARECVR_KAFKA_SECURITY_PROTOCOL")
    if not protocol:
        return None
    password = environ.get("RARECVR_KAFKA_PASSWORD", "")
    if path := environ.get("RARECVR_KAFKA_PASSWORD_FILE"):
        try:
            password = Path(path).read_text().strip()
        except OSError as error:
            raise KafkaAuthError(f"RARECVR_KAFKA_PASSWORD_FILE {path}: {error}") from None
    return KafkaAuth(
        protocol.upper(),
        environ.get("RARECVR_KAFKA_SASL_MECHANISM", "SCRAM-SHA-512").upper(),
        environ.get("RARECVR_KAFKA_USERNAME", ""),
        password,
        environ.get("RARECVR_KAFKA_CA_FILE") or None,
    )


def recorded(bootstrap: str) -> KafkaAuth | None:
    """The settings of the local broker, when it is the one at ``bootstrap`` and secure."""
    state = settings.broker_state_file()
    try:
        info = json.loads(state.read_text())
    except (OSError, ValueError):
        return None
    security = info.get("security")
    if not security or info.get("bootstrap") != bootstrap:
        return None
    return KafkaAuth(
        security["protocol"],
        security["mechanism"],
        security["username"],
        Path(security["password_file"]).read_text().strip(),
        security["ca_file"],
    )


def auth_for(bootstrap: str) -> KafkaAuth:
    """How to connect to ``bootstrap``: the environment's settings, else the recorded local
    broker's, else plaintext."""
    return from_env() or recorded(bootstrap) or KafkaAuth()


def kafka_python(bootstrap: str) -> dict:
    """``bootstrap_servers`` and the security keyword arguments of a kafka-python client."""
    return {"bootstrap_servers": bootstrap, **auth_for(bootstrap).kafka_python()}


def aiokafka(bootstrap: str) -> dict:
    """``bootstrap_servers`` and the security keyword arguments of an aiokafka client."""
    return {"bootstrap_servers": bootstrap, **auth_for(bootstrap).aiokafka()}


def check(bootstrap: str, timeout: float = 15) -> None:
    """Connect once to the first bootstrap address and authenticate; raise KafkaAuthError
    naming the problem (wrong credentials, a certificate not trusted, TLS or not) instead of
    the clients' retries until a timeout."""
    from aiokafka.conn import create_conn
    from aiokafka.errors import KafkaConnectionError, SaslAuthenticationFailed

    auth = auth_for(bootstrap)
    host, _, port = bootstrap.split(",")[0].strip().rpartition(":")

    async def connect():
        conn = await create_conn(host, int(port), **auth.aiokafka())
        conn.close()

    try:
        asyncio.run(asyncio.wait_for(connect(), timeout))
    except SaslAuthenticationFailed:
        raise KafkaAuthError(
            f"the broker at {bootstrap} refused user {auth.username!r} ({auth.mechanism}): "
            "check RARECVR_KAFKA_USERNAME and the password in RARECVR_KAFKA_PASSWORD_FILE"
        ) from None
    except ssl.SSLCertVerificationError as error:
        raise KafkaAuthError(
            f"the certificate of the broker at {bootstrap} is not trusted ({error.verify_message}):"
            " set RARECVR_KAFKA_CA_FILE to the PEM file of the certificate that signed it"
        ) from None
    except (KafkaConnectionError, ssl.SSLError, ConnectionError) as error:
        hint = (
            "the broker may want TLS and SASL: set RARECVR_KAFKA_SECURITY_PROTOCOL=SASL_SSL"
            if not auth.secure
            else "is the listener SASL_SSL?"
        )
        raise KafkaAuthError(
            f"cannot connect to the broker at {bootstrap}: {error} ({hint})"
        ) from None
    except (TimeoutError, OSError) as error:
        raise KafkaAuthError(f"no answer from the broker at {bootstrap}: {error}") from None


def connect(explicit: str | None = None) -> str:
    """The bootstrap address a command should use (:func:`settings.bootstrap`), checked: a
    process that cannot authenticate says so at start instead of retrying for ever."""
    address = settings.bootstrap(explicit)
    check(address)
    return address

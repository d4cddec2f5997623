"""The local Apache Kafka broker: jars from Maven Central, a single-node KRaft server.

``dist`` resolves the jars into a cache; ``broker`` formats, starts, probes and stops a server.
The test harness and ``rarecvr kafka up`` use the same code.
"""

from deploy.kafka.broker import Broker, BrokerError
from deploy.kafka.dist import KAFKA_VERSION, fetch

__all__ = ["KAFKA_VERSION", "Broker", "BrokerError", "fetch"]

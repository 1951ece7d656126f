"""The one place that turns Settings into Kafka client configurations.

The configs returned here hold the SASL password in clear text because the clients need it
so: pass them straight to a client, never log or print them.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from stream_app.settings import Settings

if TYPE_CHECKING:
    from kafka import KafkaProducer
    from kafka.admin import KafkaAdminClient


class _MaskedStr(str):
    """The password as the clients need it, but masked wherever a config dict is printed.

    kafka-python logs its whole configuration at DEBUG level.
    """

    __slots__ = ()

    def __repr__(self) -> str:
        return "'***'"


def bootstrap_list(settings: Settings) -> list[str]:
    """The brokers as a list: both clients take one, while comma-joined text is ambiguous."""
    return [part.strip() for part in settings.bootstrap_servers.split(",") if part.strip()]


def _common(settings: Settings) -> dict[str, object]:
    security = settings.security
    config: dict[str, object] = {
        "bootstrap_servers": bootstrap_list(settings),
        "security_protocol": security.protocol,
    }
    if security.protocol.startswith("SASL"):
        config["sasl_mechanism"] = security.sasl_mechanism
        config["sasl_plain_username"] = security.username
        config["sasl_plain_password"] = _MaskedStr(security.password.value)
    return config


def _uses_tls(settings: Settings) -> bool:
    return settings.security.protocol in ("SSL", "SASL_SSL")


def kafka_python_config(settings: Settings) -> dict[str, object]:
    """Keyword arguments for kafka-python 3 clients (producer, consumer, admin)."""
    config = _common(settings)
    if _uses_tls(settings) and settings.security.ssl_cafile:
        config["ssl_cafile"] = settings.security.ssl_cafile
    return config


def aiokafka_config(settings: Settings) -> dict[str, object]:
    """Keyword arguments for aiokafka 0.14 clients."""
    config = _common(settings)
    if _uses_tls(settings):
        from aiokafka.helpers import create_ssl_context

        # aiokafka takes no CA file, only a context; without a CA file the system's
        # trusted roots verify the brokers.
        config["ssl_context"] = create_ssl_context(cafile=settings.security.ssl_cafile)
    return config


def make_producer(settings: Settings, **overrides: object) -> KafkaProducer:
    from kafka import KafkaProducer

    return KafkaProducer(**{**kafka_python_config(settings), **overrides})


def make_admin(settings: Settings, **overrides: object) -> KafkaAdminClient:
    from kafka.admin import KafkaAdminClient

    return KafkaAdminClient(**{**kafka_python_config(settings), **overrides})


@contextmanager
def quiet_kafka_logs() -> Iterator[None]:
    """Keep kafka-python's connection retries off the terminal while a command waits."""
    logger = logging.getLogger("kafka")
    handler = logging.NullHandler()
    saved = logger.propagate
    logger.addHandler(handler)
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.propagate = saved

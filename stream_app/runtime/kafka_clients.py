"""The one place that turns Settings into Kafka client configurations.

The configs returned here hold the SASL password in clear text because the clients need it
so: pass them straight to a client, never log or print them.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

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


def faust_credentials(settings: Settings) -> Any:
    """Faust's broker_credentials for the same settings as aiokafka_config (None: PLAINTEXT).

    Faust hands them to aiokafka; its SASLCredentials repr shows the user only.
    """
    config = aiokafka_config(settings)
    protocol = config["security_protocol"]
    if protocol == "PLAINTEXT":
        return None
    import faust

    ssl_context: Any = config.get("ssl_context")
    if str(protocol).startswith("SASL"):
        # The masked password itself: aiokafka only encodes it, a repr stays masked.
        password: Any = config["sasl_plain_password"]
        return faust.SASLCredentials(
            username=str(config["sasl_plain_username"]),
            password=password,
            mechanism=str(config["sasl_mechanism"]),
            ssl_context=ssl_context,
        )
    return faust.SSLCredentials(ssl_context)


# Written once and in order however often a batch is retried, acknowledged by every
# in-sync replica; explicit, so that an override that would silently weaken it raises.
DURABLE_PRODUCER = {"acks": "all", "enable_idempotence": True}


def make_producer(settings: Settings, **overrides: object) -> KafkaProducer:
    from kafka import KafkaProducer

    return KafkaProducer(**{**kafka_python_config(settings), **DURABLE_PRODUCER, **overrides})


def make_admin(settings: Settings, **overrides: object) -> KafkaAdminClient:
    from kafka.admin import KafkaAdminClient

    return KafkaAdminClient(**{**kafka_python_config(settings), **overrides})


class AuthWatch(logging.Handler):
    """Notices kafka-python's report of refused credentials.

    kafka-python logs a refused SASL login and retries until its bootstrap times out,
    so the exception a caller sees says only "Unable to bootstrap"; this handler keeps
    the real reason so that the caller can say it in one clear line.
    """

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.refused = False

    def emit(self, record: logging.LogRecord) -> None:
        # kafka-python's SaslAuthenticationFailedError, aiokafka's SaslAuthenticationFailed.
        args = record.args if isinstance(record.args, tuple) else ()
        if any(type(arg).__name__.startswith("SaslAuthenticationFailed") for arg in args):
            self.refused = True


@contextmanager
def watch_auth(logger_name: str = "kafka") -> Iterator[AuthWatch]:
    watch = AuthWatch()
    logger = logging.getLogger(logger_name)
    logger.addHandler(watch)
    try:
        yield watch
    finally:
        logger.removeHandler(watch)


def refused_login(settings: Settings, timeout_s: float = 10.0) -> bool:
    """Whether the brokers refuse our SASL login, asked once with aiokafka.

    kafka-python often sees a refused SCRAM login as a dropped connection (the broker
    closes right after its error response), so a failed bootstrap says too little; aiokafka
    reads the error response and says so at once.
    """
    if not settings.security.protocol.startswith("SASL"):
        return False
    import asyncio

    from aiokafka import AIOKafkaProducer

    async def probe() -> None:
        producer = AIOKafkaProducer(
            **aiokafka_config(settings), request_timeout_ms=int(timeout_s * 1000)
        )
        try:
            await producer.start()
        finally:
            await producer.stop()

    logger = logging.getLogger("aiokafka")
    saved = logger.propagate
    logger.propagate = False  # its own error line would repeat ours
    try:
        with watch_auth("aiokafka") as watch:
            try:
                asyncio.run(asyncio.wait_for(probe(), timeout_s))
            except Exception:  # noqa: S110 - the watch holds the answer
                pass
        return watch.refused
    finally:
        logger.propagate = saved


def refused_message(settings: Settings) -> str:
    """One line for refused credentials; it names the user, never the password."""
    security = settings.security
    return (
        f"Kafka at {settings.bootstrap_servers} refused the login of user "
        f"{security.username!r} ({security.sasl_mechanism}): check KAFKA_SASL_USERNAME "
        "and KAFKA_SASL_PASSWORD"
    )


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


def describe_error(error: BaseException) -> str:
    """One line for an error of a Kafka client, without repeating its class name."""
    name = type(error).__name__
    text = " ".join(str(error).split())
    # kafka-python's errors already start with their class name.
    if not text or text.startswith(name):
        return text or name
    return f"{name}: {text}"

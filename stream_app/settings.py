"""Every setting of the service, read from the environment in one place.

Each variable of ../CONTRACT.md has one field here; nothing else in the package reads
os.environ.  A bad value stops the program at start with one line naming the variable.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from stream_app.domain.bands import CAMPAIGN_BANDS, LOYALTY_BANDS, Bands, BandScale
from stream_app.domain.drops import DropSettings
from stream_app.domain.durations import DurationError, format_duration, parse_duration_ms
from stream_app.domain.labels import DEFAULT_MAX_LABEL_VALUES


class SettingsError(ValueError):
    """A setting with a value the service cannot use."""


# Numbers in ASCII only: str.isdigit, int, float and the regex \d also take other
# scripts' digits ("²" passes isdigit and then fails int).
_WHOLE = re.compile(r"[0-9]{1,10}")
_DECIMAL = re.compile(r"(?:[0-9]{1,20}(?:\.[0-9]{0,20})?|\.[0-9]{1,20})(?:[eE][-+]?[0-9]{1,3})?")
MAX_WHOLE = 2**31 - 1  # Kafka's int32 settings
# A little longer than the whole calendar (years 1 to 9999), so that "never" can be said;
# ts plus two such durations stays far inside 64-bit integers and JavaScript's numbers.
MAX_DURATION_MS = 3_660_000 * 86_400_000
# Kafka's legal topic characters; the app id prefixes internal topics (up to ~30 more).
_TOPIC = re.compile(r"[A-Za-z0-9._-]{1,249}")
_MAX_APP_ID = 200
# One host[:port] of KAFKA_BOOTSTRAP_SERVERS: a name, IPv4 or [IPv6] address.
_BROKER = re.compile(r"(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+)(?::(?P<port>[0-9]{1,5}))?")
_INSTANCE_ID = re.compile(r"[A-Za-z0-9._:-]{1,249}")
_HOST = re.compile(r"[A-Za-z0-9._-]+|[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*")


def parse_whole(name: str, raw: str, low: int = 1, high: int = MAX_WHOLE) -> int:
    """A whole number in ASCII digits from low to high, or SettingsError naming `name`."""
    if _WHOLE.fullmatch(raw) is None or not low <= int(raw) <= high:
        what = "a positive whole number" if low == 1 else "a whole number"
        raise SettingsError(f"{name}: {_shown(raw)} is not {what} from {low} to {high}")
    return int(raw)


def parse_decimal(name: str, raw: str, low: float, high: float, what: str) -> float:
    """A decimal number (ASCII, e.g. 0.2 or 1e-4) within [low, high], or SettingsError."""
    value = float(raw) if _DECIMAL.fullmatch(raw) else float("nan")
    if not low <= value <= high:
        raise SettingsError(f"{name}: {_shown(raw)} is not {what}")
    return value


def parse_duration_setting(name: str, raw: str, also: str = "") -> int:
    """A duration as in domain/durations.py, in ASCII, at most MAX_DURATION_MS; `also` names
    what else the variable accepts, for the message."""
    try:
        if not raw.isascii() or len(raw) > 40:
            raise DurationError(
                f"{_shown(raw)} is not a duration: write a whole number and a "
                "unit (ms, s, m, h, d), e.g. 5m"
            )
        value = parse_duration_ms(raw)
    except DurationError as error:
        raise SettingsError(f"{name}: {error}{also}") from None
    if value > MAX_DURATION_MS:
        raise SettingsError(
            f"{name}: {_shown(raw)} is longer than {format_duration(MAX_DURATION_MS)}{also}"
        )
    return value


def _shown(raw: str) -> str:
    """A value quoted on one line and cut short, for an error message."""
    return repr(raw if len(raw) <= 40 else raw[:40] + "…")


@dataclass(frozen=True)
class Secret:
    """A value that never shows in logs, reprs or error messages."""

    value: str = field(repr=False)

    def __repr__(self) -> str:
        return "Secret('***')" if self.value else "Secret('')"

    __str__ = __repr__


@dataclass(frozen=True)
class WindowSize:
    """One configured tumbling window size: its label as configured ("5m") and its length."""

    label: str
    ms: int


@dataclass(frozen=True)
class KafkaSecurity:
    """How clients authenticate to the brokers; PLAINTEXT with no credentials by default."""

    protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    username: str | None = None
    password: Secret = Secret("")
    ssl_cafile: str | None = None


@dataclass(frozen=True)
class Settings:
    bootstrap_servers: str = "127.0.0.1:9092"
    app_id: str = "upsell-stream"
    web_host: str = "127.0.0.1"
    web_port: int = 6066
    windows: tuple[WindowSize, ...] = (
        WindowSize("5m", 300_000),
        WindowSize("1h", 3_600_000),
        WindowSize("1d", 86_400_000),
    )
    attribution_window_ms: int = 7 * 86_400_000
    grace_ms: int = 60_000
    topic_offers: str = "upsell.offers"
    topic_purchases: str = "upsell.purchases"
    topic_rates: str = "upsell.rates"
    topic_alerts: str = "upsell.alerts"
    topic_deadletter: str = "upsell.deadletter"
    topic_kpis: str = "upsell.kpis"
    data_dir: Path = Path("./var")
    # Per user, not per data dir: downloads shared by every clone and test run.
    cache_dir: Path = Path.home() / ".cache" / "upsell-stream"
    partitions: int = 6
    bands: tuple[float, ...] = (0.05, 0.10, 0.20)
    loyalty_bands: tuple[float, ...] = (0.15, 0.25)
    idle_advance_ms: int | None = None
    log_level: str = "info"
    batch_max_records: int = 10_000
    drops: DropSettings = field(default_factory=DropSettings)
    security: KafkaSecurity = KafkaSecurity()
    max_label_values: int = DEFAULT_MAX_LABEL_VALUES
    # How long the group waits for a silent worker before its partitions move: the
    # fail-over time after a crash (Faust's default is 60 s).
    session_timeout_ms: int = 30_000
    # UPSELL_INSTANCE_ID: the worker's static membership of the consumer group (Kafka's
    # group.instance.id), so that a worker restarted after a crash takes back its
    # predecessor's place at once; None: dynamic membership.
    instance_id: str | None = None
    # UPSELL_MAX_FUTURE: how far past the wall clock a ts may be (None: off).
    max_future_ms: int | None = 3_600_000
    # Replicas of every topic the service creates; None: min(3, brokers in the cluster),
    # resolved when topics are created (stream_app/runtime/topics.py).
    replication_factor: int | None = None
    # The demo's description of what it feeds the worker (stream_app.domain.demo_source).
    demo_info: Path | None = None

    @property
    def topic_events(self) -> str:
        """Internal: valid events re-keyed by customer, so one worker sees all of a customer."""
        return f"{self.app_id}-events-by-customer"

    @property
    def topic_partials(self) -> str:
        """Internal: each partition's window counts, summed into the published rates."""
        return f"{self.app_id}-window-partials"

    @property
    def web_url(self) -> str:
        """Where a local client reaches this worker's web server."""
        bound_to_all = self.web_host in ("0.0.0.0", "::")  # noqa: S104 - compared, not bound
        host = "127.0.0.1" if bound_to_all else self.web_host
        return f"http://{host}:{self.web_port}"

    @property
    def band_scales(self) -> Bands:
        return Bands.of(self.bands, self.loyalty_bands)

    @property
    def input_topics(self) -> tuple[str, str]:
        return (self.topic_offers, self.topic_purchases)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        defaults = cls()

        def text(name: str, default: str) -> str:
            value = env.get(name, "").strip()
            return value or default

        def duration(name: str, default_ms: int) -> int:
            return parse_duration_setting(name, text(name, format_duration(default_ms)))

        def positive_int(name: str, default: int) -> int:
            return parse_whole(name, text(name, str(default)))

        def topic(name: str, default: str) -> str:
            value = text(name, default)
            if _TOPIC.fullmatch(value) is None or value in (".", ".."):
                raise SettingsError(
                    f"{name}: {_shown(value)} is not a Kafka topic name "
                    "(up to 249 of A-Z a-z 0-9 . _ -)"
                )
            return value

        port = parse_whole(
            "UPSELL_WEB_PORT", text("UPSELL_WEB_PORT", str(defaults.web_port)), high=65535
        )
        grace_ms = duration("UPSELL_GRACE", defaults.grace_ms)
        attribution_ms = duration("UPSELL_ATTRIBUTION_WINDOW", defaults.attribution_window_ms)
        return cls(
            bootstrap_servers=_parse_bootstrap(
                text("KAFKA_BOOTSTRAP_SERVERS", defaults.bootstrap_servers)
            ),
            app_id=_parse_app_id(text("UPSELL_APP_ID", defaults.app_id)),
            web_host=_parse_web_host(text("UPSELL_WEB_HOST", defaults.web_host)),
            web_port=port,
            windows=_parse_windows(text("UPSELL_WINDOWS", "5m,1h,1d")),
            attribution_window_ms=attribution_ms,
            grace_ms=grace_ms,
            topic_offers=topic("UPSELL_TOPIC_OFFERS", defaults.topic_offers),
            topic_purchases=topic("UPSELL_TOPIC_PURCHASES", defaults.topic_purchases),
            topic_rates=topic("UPSELL_TOPIC_RATES", defaults.topic_rates),
            topic_alerts=topic("UPSELL_TOPIC_ALERTS", defaults.topic_alerts),
            topic_deadletter=topic("UPSELL_TOPIC_DEADLETTER", defaults.topic_deadletter),
            topic_kpis=topic("UPSELL_TOPIC_KPIS", defaults.topic_kpis),
            data_dir=Path(text("UPSELL_DATA_DIR", str(defaults.data_dir))),
            cache_dir=_cache_dir(env, defaults.cache_dir),
            partitions=positive_int("UPSELL_PARTITIONS", defaults.partitions),
            bands=_parse_bands(env, "UPSELL_BANDS", defaults.bands, CAMPAIGN_BANDS),
            loyalty_bands=_parse_bands(
                env, "UPSELL_LOYALTY_BANDS", defaults.loyalty_bands, LOYALTY_BANDS
            ),
            idle_advance_ms=_parse_idle_advance(env),
            log_level=_parse_log_level(env),
            batch_max_records=positive_int("UPSELL_BATCH_MAX_RECORDS", defaults.batch_max_records),
            drops=_parse_drops(
                env, positive_int, duration("UPSELL_DROP_AGE", grace_ms), grace_ms, attribution_ms
            ),
            security=_parse_security(env),
            max_label_values=positive_int("UPSELL_MAX_LABEL_VALUES", defaults.max_label_values),
            session_timeout_ms=_parse_session_timeout(
                duration("UPSELL_SESSION_TIMEOUT", defaults.session_timeout_ms)
            ),
            max_future_ms=_duration_or_off(env, "UPSELL_MAX_FUTURE", defaults.max_future_ms),
            instance_id=_parse_instance_id(env, port),
            replication_factor=_parse_replication_factor(env),
            demo_info=Path(env["UPSELL_DEMO_INFO"]) if env.get("UPSELL_DEMO_INFO") else None,
        )


def _parse_bootstrap(raw: str) -> str:
    for part in raw.split(","):
        match = _BROKER.fullmatch(part.strip())
        if match is None or (match["port"] is not None and not 1 <= int(match["port"]) <= 65535):
            raise SettingsError(
                f"KAFKA_BOOTSTRAP_SERVERS: {_shown(part.strip())} is not "
                "host:port (a comma-separated list of them)"
            )
    return raw


def _parse_app_id(raw: str) -> str:
    if _TOPIC.fullmatch(raw) is None or len(raw) > _MAX_APP_ID:
        raise SettingsError(
            f"UPSELL_APP_ID: {_shown(raw)} is not up to {_MAX_APP_ID} of "
            "A-Z a-z 0-9 . _ - (it prefixes the internal topics' names)"
        )
    return raw


def _parse_web_host(raw: str) -> str:
    if _HOST.fullmatch(raw) is None:
        raise SettingsError(f"UPSELL_WEB_HOST: {_shown(raw)} is not a host name or IP address")
    return raw


def _duration_or_off(env: Mapping[str, str], name: str, default_ms: int | None) -> int | None:
    raw = env.get(name, "").strip()
    if not raw:
        return default_ms
    if raw.lower() == "off":
        return None
    return parse_duration_setting(name, raw, " (or off)")


def _parse_replication_factor(env: Mapping[str, str]) -> int | None:
    # Empty: min(3, brokers in the cluster), resolved when topics are created.
    raw = env.get("UPSELL_REPLICATION_FACTOR", "").strip()
    return parse_whole("UPSELL_REPLICATION_FACTOR", raw, high=32_767) if raw else None


def _parse_instance_id(env: Mapping[str, str], web_port: int) -> str | None:
    # By default the host and the web port: unique among the workers running at once (a
    # port serves one worker per host), the same for a worker restarted in its place.
    raw = env.get("UPSELL_INSTANCE_ID", "").strip()
    if raw.lower() == "off":
        return None
    host = re.sub(r"[^A-Za-z0-9._-]", "_", socket.gethostname())[:240]
    value = raw or f"{host}:{web_port}"
    if _INSTANCE_ID.fullmatch(value) is None:
        raise SettingsError(
            f"UPSELL_INSTANCE_ID: {_shown(value)} is not up to 249 of A-Z a-z 0-9 . _ - : (or off)"
        )
    return value


def _parse_session_timeout(value_ms: int) -> int:
    # The broker's default bounds are 6 s to 30 min; Faust wants it below its 90 s
    # request timeout.
    if not 6_000 <= value_ms <= 90_000:
        raise SettingsError("UPSELL_SESSION_TIMEOUT: must be between 6s and 90s")
    return value_ms


def _parse_bands(
    env: Mapping[str, str], name: str, default: tuple[float, ...], names: tuple[str, ...]
) -> tuple[float, ...]:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    what = (
        f"a list of {len(names) - 1} increasing rates within [0, 1] "
        f"(lower bounds of {', '.join(names[1:])})"
    )
    bounds = tuple(
        parse_decimal(name, part.strip(), 0.0, 1.0, what) for part in raw.strip("[]").split(",")
    )
    try:
        BandScale(name, names, bounds)
    except ValueError as error:
        raise SettingsError(f"{name}: {_shown(raw)} is not {what}: {error}") from None
    return bounds


_LOG_LEVELS = ("crit", "error", "warn", "info", "debug")


def _parse_log_level(env: Mapping[str, str]) -> str:
    level = env.get("UPSELL_LOG_LEVEL", "").strip().lower() or "info"
    if level not in _LOG_LEVELS:
        raise SettingsError(f"UPSELL_LOG_LEVEL: {level!r} is not one of {', '.join(_LOG_LEVELS)}")
    return level


def _parse_idle_advance(env: Mapping[str, str]) -> int | None:
    value = _duration_or_off(env, "UPSELL_IDLE_ADVANCE", None)
    if value is None:
        return None
    if value <= 0:
        raise SettingsError("UPSELL_IDLE_ADVANCE: must be longer than 0 (or off)")
    return value


def _parse_drops(
    env: Mapping[str, str],
    positive_int: Callable[[str, int], int],
    age_ms: int,
    grace_ms: int,
    attribution_ms: int,
) -> DropSettings:
    defaults = DropSettings()

    def share(name: str, default: float, low: float, high: float, what: str) -> float:
        raw = env.get(name, "").strip()
        return parse_decimal(name, raw, low, high, what) if raw else default

    significance = share(
        "UPSELL_DROP_SIGNIFICANCE",
        defaults.significance,
        1e-12,
        0.5,
        "a significance level above 0 and at most 0.5, e.g. 0.0001",
    )
    relative = share(
        "UPSELL_DROP_MIN_RELATIVE",
        defaults.min_relative_drop,
        0.0,
        0.99,
        "a relative drop from 0 to 0.99, e.g. 0.2 for 20 %",
    )
    if age_ms < grace_ms:
        raise SettingsError(
            f"UPSELL_DROP_AGE: {format_duration(age_ms)} is shorter than "
            f"UPSELL_GRACE ({format_duration(grace_ms)}): a window is "
            "measured once it has closed"
        )
    if age_ms > attribution_ms + grace_ms:
        raise SettingsError(
            f"UPSELL_DROP_AGE: {format_duration(age_ms)} is longer than "
            "UPSELL_ATTRIBUTION_WINDOW + UPSELL_GRACE, when a window is "
            "forgotten"
        )
    return DropSettings(
        significance=significance,
        min_offers=positive_int("UPSELL_DROP_MIN_OFFERS", defaults.min_offers),
        min_relative_drop=relative,
        baseline_windows=positive_int("UPSELL_DROP_BASELINE_WINDOWS", defaults.baseline_windows),
        age_ms=age_ms,
    )


def _parse_windows(raw: str) -> tuple[WindowSize, ...]:
    sizes: list[WindowSize] = []
    for part in raw.split(","):
        label = part.strip()
        ms = parse_duration_setting("UPSELL_WINDOWS", label)
        if ms <= 0:
            raise SettingsError(f"UPSELL_WINDOWS: window size {label!r} must be longer than 0")
        if any(size.ms == ms for size in sizes):
            raise SettingsError(f"UPSELL_WINDOWS: window size {label!r} is listed twice")
        sizes.append(WindowSize(label, ms))
    return tuple(sizes)


def _cache_dir(env: Mapping[str, str], default: Path) -> Path:
    # The XDG base directory spec says to ignore a relative XDG_CACHE_HOME.
    base = env.get("XDG_CACHE_HOME", "").strip()
    if base and Path(base).is_absolute():
        return Path(base) / "upsell-stream"
    home = env.get("HOME", "").strip()
    return Path(home) / ".cache" / "upsell-stream" if home else default


_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


def _parse_security(env: Mapping[str, str]) -> KafkaSecurity:
    protocol = env.get("KAFKA_SECURITY_PROTOCOL", "").strip().upper() or "PLAINTEXT"
    if protocol not in _PROTOCOLS:
        raise SettingsError(
            f"KAFKA_SECURITY_PROTOCOL: {protocol!r} is not one of {', '.join(_PROTOCOLS)}"
        )
    mechanism = env.get("KAFKA_SASL_MECHANISM", "").strip().upper() or None
    username = env.get("KAFKA_SASL_USERNAME", "").strip() or None
    password = env.get("KAFKA_SASL_PASSWORD", "")
    if protocol.startswith("SASL"):
        mechanism = mechanism or "SCRAM-SHA-256"
        if mechanism not in _MECHANISMS:
            raise SettingsError(
                f"KAFKA_SASL_MECHANISM: {mechanism!r} is not one of {', '.join(_MECHANISMS)}"
            )
        if not username or not password:
            raise SettingsError(
                f"KAFKA_SECURITY_PROTOCOL={protocol} needs KAFKA_SASL_USERNAME and "
                "KAFKA_SASL_PASSWORD"
            )
    cafile = env.get("KAFKA_SSL_CAFILE", "").strip() or None
    return KafkaSecurity(protocol, mechanism, username, Secret(password), cafile)


# Every environment variable the commands read, with its default in brackets: the
# commands' --help lists the ones each reads (docs/configuration.md says more).
ENVIRONMENT: dict[str, str] = {
    "KAFKA_BOOTSTRAP_SERVERS": "brokers, host:port comma-separated [127.0.0.1:9092]",
    "KAFKA_SECURITY_PROTOCOL": "PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL [PLAINTEXT]",
    "KAFKA_SASL_MECHANISM": "PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 [SCRAM-SHA-256 with SASL]",
    "KAFKA_SASL_USERNAME": "SASL user name (required with SASL)",
    "KAFKA_SASL_PASSWORD": "SASL password (required with SASL; never printed)",
    "KAFKA_SSL_CAFILE": "CA bundle that verifies the brokers [the system's roots]",
    "UPSELL_APP_ID": "consumer group and prefix of the internal topics [upsell-stream]",
    "UPSELL_WEB_HOST": "address the worker's HTTP server binds [127.0.0.1]",
    "UPSELL_WEB_PORT": "port of the worker's HTTP server (page, /api, /metrics) [6066]",
    "UPSELL_WINDOWS": "tumbling window sizes, e.g. 5m,1h,1d [5m,1h,1d]",
    "UPSELL_ATTRIBUTION_WINDOW": "how long after an offer a purchase converts it [7d]",
    "UPSELL_GRACE": "how long after a window's end late events still count [1m]",
    "UPSELL_IDLE_ADVANCE": "advance stream time after this long without events [off]",
    "UPSELL_TOPIC_OFFERS": "input topic of offers [upsell.offers]",
    "UPSELL_TOPIC_PURCHASES": "input topic of purchases [upsell.purchases]",
    "UPSELL_TOPIC_RATES": "output topic of window records [upsell.rates]",
    "UPSELL_TOPIC_ALERTS": "output topic of rate-drop alerts [upsell.alerts]",
    "UPSELL_TOPIC_DEADLETTER": "output topic of rejected messages [upsell.deadletter]",
    "UPSELL_TOPIC_KPIS": "output topic of the KPI family [upsell.kpis]",
    "UPSELL_DATA_DIR": "local state, logs and the local broker's data [./var]",
    "XDG_CACHE_HOME": "where the Kafka download is cached [~/.cache]/upsell-stream",
    "UPSELL_PARTITIONS": "partitions of the topics the service creates [6]",
    "UPSELL_REPLICATION_FACTOR": "replicas of the topics it creates [min(3, brokers)]",
    "UPSELL_BATCH_MAX_RECORDS": "most records fetched at once [10000]",
    "UPSELL_LOG_LEVEL": "crit, error, warn, info or debug [info]",
    "UPSELL_MAX_LABEL_VALUES": "distinct values per dimension, the rest __other__ [300]",
    "UPSELL_MAX_FUTURE": "how far ahead of the clock an event's ts may be, or off [1h]",
    "UPSELL_SESSION_TIMEOUT": "fail-over time after a worker's crash, 6s to 90s [30s]",
    "UPSELL_INSTANCE_ID": "static group membership of this worker, or off [host:web port]",
    "UPSELL_BANDS": "lower bounds of the campaign rate bands [0.05,0.10,0.20]",
    "UPSELL_LOYALTY_BANDS": "lower bounds of the loyalty rate bands [0.15,0.25]",
    "UPSELL_DROP_AGE": "event time after a window's end at which drops are judged [grace]",
    "UPSELL_DROP_BASELINE_WINDOWS": "earlier windows summed into a drop's baseline [6]",
    "UPSELL_DROP_SIGNIFICANCE": "p-value below which a rate is a drop [0.0001]",
    "UPSELL_DROP_MIN_OFFERS": "offers a window and its baseline each need [200]",
    "UPSELL_DROP_MIN_RELATIVE": "how far below the baseline a drop must be [0.2]",
    "UPSELL_DEMO_INFO": "the demo's description of its simulated data, shown on the page",
}
KAFKA_CLIENT_ENVIRONMENT = tuple(name for name in ENVIRONMENT if name.startswith("KAFKA_"))

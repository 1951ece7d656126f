"""Every setting of the service, read from the environment in one place.

Each variable of ../CONTRACT.md has one field here; nothing else in the package reads
os.environ.  A bad value stops the program at start with one line naming the variable.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from stream_app.core.bands import CAMPAIGN_BANDS, LOYALTY_BANDS, Bands, BandScale
from stream_app.core.drops import DropSettings
from stream_app.core.durations import DurationError, format_duration, parse_duration_ms
from stream_app.core.labels import DEFAULT_MAX_LABEL_VALUES


class SettingsError(ValueError):
    """A setting with a value the service cannot use."""


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
    # Replicas of every topic the service creates; None: min(3, brokers in the cluster),
    # resolved when topics are created (stream_app/topics.py).
    replication_factor: int | None = None

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
            raw = text(name, format_duration(default_ms))
            try:
                return parse_duration_ms(raw)
            except DurationError as error:
                raise SettingsError(f"{name}: {error}") from None

        def positive_int(name: str, default: int) -> int:
            raw = text(name, str(default))
            if not raw.isdigit() or int(raw) <= 0:
                raise SettingsError(f"{name}: {raw!r} is not a positive whole number")
            return int(raw)

        port = positive_int("UPSELL_WEB_PORT", defaults.web_port)
        if port > 65535:
            raise SettingsError(f"UPSELL_WEB_PORT: {port} is not a TCP port")
        grace_ms = duration("UPSELL_GRACE", defaults.grace_ms)
        attribution_ms = duration("UPSELL_ATTRIBUTION_WINDOW", defaults.attribution_window_ms)
        return cls(
            bootstrap_servers=text("KAFKA_BOOTSTRAP_SERVERS", defaults.bootstrap_servers),
            app_id=text("UPSELL_APP_ID", defaults.app_id),
            web_host=text("UPSELL_WEB_HOST", defaults.web_host),
            web_port=port,
            windows=_parse_windows(text("UPSELL_WINDOWS", "5m,1h,1d")),
            attribution_window_ms=attribution_ms,
            grace_ms=grace_ms,
            topic_offers=text("UPSELL_TOPIC_OFFERS", defaults.topic_offers),
            topic_purchases=text("UPSELL_TOPIC_PURCHASES", defaults.topic_purchases),
            topic_rates=text("UPSELL_TOPIC_RATES", defaults.topic_rates),
            topic_alerts=text("UPSELL_TOPIC_ALERTS", defaults.topic_alerts),
            topic_deadletter=text("UPSELL_TOPIC_DEADLETTER", defaults.topic_deadletter),
            topic_kpis=text("UPSELL_TOPIC_KPIS", defaults.topic_kpis),
            data_dir=Path(text("UPSELL_DATA_DIR", str(defaults.data_dir))),
            cache_dir=_cache_dir(env, defaults.cache_dir),
            partitions=positive_int("UPSELL_PARTITIONS", defaults.partitions),
            bands=_parse_bands(env, "UPSELL_BANDS", defaults.bands, CAMPAIGN_BANDS),
            loyalty_bands=_parse_bands(env, "UPSELL_LOYALTY_BANDS", defaults.loyalty_bands,
                                       LOYALTY_BANDS),
            idle_advance_ms=_parse_idle_advance(env),
            log_level=_parse_log_level(env),
            batch_max_records=positive_int("UPSELL_BATCH_MAX_RECORDS", defaults.batch_max_records),
            drops=_parse_drops(env, positive_int, duration("UPSELL_DROP_AGE", grace_ms),
                               grace_ms, attribution_ms),
            security=_parse_security(env),
            max_label_values=positive_int("UPSELL_MAX_LABEL_VALUES", defaults.max_label_values),
            session_timeout_ms=_parse_session_timeout(
                duration("UPSELL_SESSION_TIMEOUT", defaults.session_timeout_ms)),
            replication_factor=_parse_replication_factor(env),
        )


def _parse_replication_factor(env: Mapping[str, str]) -> int | None:
    raw = env.get("UPSELL_REPLICATION_FACTOR", "").strip()
    if not raw:
        return None
    # isascii: str.isdigit() also takes digits such as '²' that int() refuses.
    if not (raw.isascii() and raw.isdigit()) or int(raw) < 1:
        raise SettingsError(
            f"UPSELL_REPLICATION_FACTOR: {raw!r} is not a positive whole number of replicas "
            "(leave it empty for min(3, brokers in the cluster))"
        )
    return int(raw)


def _parse_session_timeout(value_ms: int) -> int:
    # The broker's default bounds are 6 s to 30 min; Faust wants it below its 90 s
    # request timeout.
    if not 6_000 <= value_ms <= 90_000:
        raise SettingsError("UPSELL_SESSION_TIMEOUT: must be between 6s and 90s")
    return value_ms


def _parse_bands(env: Mapping[str, str], name: str, default: tuple[float, ...],
                 names: tuple[str, ...]) -> tuple[float, ...]:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        bounds = tuple(float(part) for part in raw.strip("[]").split(","))
        BandScale(name, names, bounds)
    except ValueError as error:
        raise SettingsError(
            f"{name}: {raw!r} is not a list of {len(names) - 1} increasing rates within [0, 1] "
            f"(lower bounds of {', '.join(names[1:])}): {error}"
        ) from None
    return bounds


_LOG_LEVELS = ("crit", "error", "warn", "info", "debug")


def _parse_log_level(env: Mapping[str, str]) -> str:
    level = env.get("UPSELL_LOG_LEVEL", "").strip().lower() or "info"
    if level not in _LOG_LEVELS:
        raise SettingsError(f"UPSELL_LOG_LEVEL: {level!r} is not one of {', '.join(_LOG_LEVELS)}")
    return level


def _parse_idle_advance(env: Mapping[str, str]) -> int | None:
    raw = env.get("UPSELL_IDLE_ADVANCE", "").strip()
    if not raw or raw.lower() == "off":
        return None
    try:
        value = parse_duration_ms(raw)
    except DurationError as error:
        raise SettingsError(f"UPSELL_IDLE_ADVANCE: {error} (or off)") from None
    if value <= 0:
        raise SettingsError("UPSELL_IDLE_ADVANCE: must be longer than 0 (or off)")
    return value


def _parse_drops(env: Mapping[str, str], positive_int: Callable[[str, int], int], age_ms: int,
                 grace_ms: int, attribution_ms: int) -> DropSettings:
    defaults = DropSettings()

    def share(name: str, default: float, low: float, high: float, what: str) -> float:
        raw = env.get(name, "").strip()
        if not raw:
            return default
        try:
            value = float(raw)
        except ValueError:
            value = float("nan")
        if not low <= value <= high:
            raise SettingsError(f"{name}: {raw!r} is not {what}")
        return value

    significance = share("UPSELL_DROP_SIGNIFICANCE", defaults.significance, 1e-12, 0.5,
                         "a significance level above 0 and at most 0.5, e.g. 0.0001")
    relative = share("UPSELL_DROP_MIN_RELATIVE", defaults.min_relative_drop, 0.0, 0.99,
                     "a relative drop from 0 to 0.99, e.g. 0.2 for 20 %")
    if age_ms < grace_ms:
        raise SettingsError(f"UPSELL_DROP_AGE: {format_duration(age_ms)} is shorter than "
                            f"UPSELL_GRACE ({format_duration(grace_ms)}): a window is "
                            "measured once it has closed")
    if age_ms > attribution_ms + grace_ms:
        raise SettingsError(f"UPSELL_DROP_AGE: {format_duration(age_ms)} is longer than "
                            "UPSELL_ATTRIBUTION_WINDOW + UPSELL_GRACE, when a window is "
                            "forgotten")
    return DropSettings(
        significance=significance,
        min_offers=positive_int("UPSELL_DROP_MIN_OFFERS", defaults.min_offers),
        min_relative_drop=relative,
        baseline_windows=positive_int("UPSELL_DROP_BASELINE_WINDOWS",
                                      defaults.baseline_windows),
        age_ms=age_ms,
    )


def _parse_windows(raw: str) -> tuple[WindowSize, ...]:
    sizes: list[WindowSize] = []
    for part in raw.split(","):
        label = part.strip()
        try:
            ms = parse_duration_ms(label)
        except DurationError as error:
            raise SettingsError(f"UPSELL_WINDOWS: {error}") from None
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

"""The /metrics text of a registry: prometheus_client's text format, byte for byte, with
each sample's name and labels formatted once and kept between renders.

`generate_latest` formats every sample from scratch: it sorts and escapes the labels and
builds the line through several format calls, about 9 us per sample, which was two thirds
of a render of 2,200 series (29 ms), on the event loop that also runs the hot path. Between
two renders nearly every series is the same and only its value moved, so the part of a
line before the value is kept per (sample name, labels), and a render formats values only.
Families the fast path does not cover (other types, timestamps, OpenMetrics-only
samples, names outside the legacy character set) are written by `generate_latest` itself.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

from prometheus_client import generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString

_METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*\Z")
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")
_TYPES = {"counter", "gauge"}
# The library's own formatting of a value (untyped there).
_value_text: Callable[[float], str] = floatToGoString

_SampleKey = tuple[str, tuple[tuple[str, str], ...]]


class ExpositionWriter:
    def __init__(self, registry: Collector) -> None:
        self._registry = registry
        # Only what the last render used, so that series that went away are let go.
        self._prefixes: dict[_SampleKey, str] = {}
        self._headers: dict[tuple[str, str, str], str] = {}

    def render(self) -> bytes:
        prefixes: dict[_SampleKey, str] = {}
        output: list[str] = []
        for metric in self._registry.collect():
            lines = self._lines(metric, prefixes)
            output.append(
                generate_latest(_Single(metric)).decode("utf-8") if lines is None else lines
            )
        self._prefixes = prefixes
        return "".join(output).encode("utf-8")

    def _lines(self, metric: Metric, prefixes: dict[_SampleKey, str]) -> str | None:
        """The family's text, None if the fast path does not cover it."""
        if metric.type not in _TYPES or not _METRIC_NAME.match(metric.name):
            return None
        # A counter's samples are <name>_total (and <name>_created where one was given).
        expected = f"{metric.name}_total" if metric.type == "counter" else metric.name
        kept = self._prefixes
        lines = [self._header(metric)]
        for sample in metric.samples:
            if sample.name != expected or sample.timestamp is not None:
                return None
            key = (sample.name, tuple(sample.labels.items()))
            prefix = kept.get(key)
            if prefix is None:
                prefix = _prefix(sample)
                if prefix is None:
                    return None
            prefixes[key] = prefix
            lines.append(f"{prefix}{_value_text(sample.value)}\n")
        return "".join(lines)

    def _header(self, metric: Metric) -> str:
        key = (metric.name, metric.type, metric.documentation)
        header = self._headers.get(key)
        if header is None:
            name = f"{metric.name}_total" if metric.type == "counter" else metric.name
            documentation = metric.documentation.replace("\\", r"\\").replace("\n", r"\n")
            header = self._headers[key] = (
                f"# HELP {name} {documentation}\n# TYPE {name} {metric.type}\n"
            )
        return header


def _prefix(sample: Sample) -> str | None:
    """The line up to its value; None for a label name outside the legacy character set."""
    if not all(_LABEL_NAME.match(name) for name in sample.labels):
        return None
    if not sample.labels:
        return f"{sample.name} "
    labels = ",".join(f'{name}="{_escape(value)}"' for name, value in sorted(sample.labels.items()))
    return f"{sample.name}{{{labels}}} "


def _escape(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


class _Single(Collector):
    def __init__(self, metric: Metric) -> None:
        self._metric = metric

    def collect(self) -> Iterable[Metric]:
        return [self._metric]

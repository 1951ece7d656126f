"""The window sizes, attribution window, grace and label cap every stage counts with."""

from __future__ import annotations

from dataclasses import dataclass, field

from stream_app.domain.cohorts import WindowKey
from stream_app.domain.labels import DEFAULT_MAX_LABEL_VALUES
from stream_app.domain.windows import is_final


@dataclass(frozen=True, slots=True)
class WindowConfig:
    sizes: tuple[tuple[str, int], ...]
    attribution_ms: int
    grace_ms: int
    # UPSELL_MAX_LABEL_VALUES: values admitted per dimension and partition (labels.py).
    max_label_values: int = DEFAULT_MAX_LABEL_VALUES

    _size_by_label: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Looked up several times per event.
        object.__setattr__(self, "_size_by_label", dict(self.sizes))

    def size_ms(self, label: str) -> int:
        return self._size_by_label[label]

    def is_final(self, window: WindowKey, stream_time: int | None) -> bool:
        end = window[1] + self.size_ms(window[0])
        return is_final(end, stream_time, self.grace_ms, self.attribution_ms)

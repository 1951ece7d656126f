# The upsell-stream image: the package, its compiled core and its console script on
# python:3.11-slim.
#   docker build -t upsell-stream .
#   docker run --rm -e KAFKA_BOOTSTRAP_SERVERS=broker:9092 -p 6066:6066 upsell-stream
# Two stages: Rust's official image builds the wheel (the compiled core, stream_app._engine,
# with maturin), the final image installs it and needs no compiler. Both are Debian
# bookworm, so the wheel's C library matches.
FROM rust:1-slim-bookworm AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN apt-get update -qq \
    && apt-get install -y -qq --no-install-recommends python3 python3-venv >/dev/null \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv /opt/build \
    && /opt/build/bin/pip install -q "maturin>=1.7,<2"

WORKDIR /src
# pyproject.toml names README.md as the package's readme, so the build needs it.
COPY pyproject.toml README.md ./
COPY engine ./engine
COPY stream_app ./stream_app
RUN /opt/build/bin/maturin build --release --out /wheels

FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

COPY --from=build /wheels /wheels
RUN pip install /wheels/*.whl \
    && rm -rf /wheels \
    && useradd --system --uid 10001 --create-home --home-dir /home/upsell upsell \
    && mkdir -p /var/lib/upsell-stream \
    && chown upsell /var/lib/upsell-stream

USER upsell
WORKDIR /var/lib/upsell-stream
# Inside a container the metrics must be reachable from other containers, not only loopback.
ENV UPSELL_DATA_DIR=/var/lib/upsell-stream \
    UPSELL_WEB_HOST=0.0.0.0 \
    UPSELL_WEB_PORT=6066
EXPOSE 6066

# Exec form: the worker itself receives SIGTERM and stops cleanly.
CMD ["upsell-stream", "worker"]

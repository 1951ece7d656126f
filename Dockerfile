# The upsell-stream image: the package and its console script on python:3.11-slim.
#   docker build -t upsell-stream .
#   docker run --rm -e KAFKA_BOOTSTRAP_SERVERS=broker:9092 -p 6066:6066 upsell-stream
# Every dependency ships as a binary wheel for CPython 3.11 on Linux: no compiler needed.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
# pyproject.toml names README.md as the package's readme, so the build needs it.
COPY pyproject.toml README.md ./
COPY stream_app ./stream_app
RUN pip install . \
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

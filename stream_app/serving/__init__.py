"""What the worker shows: the web page and its API, the Prometheus metrics."""

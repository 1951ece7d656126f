"""The `upsell-stream` console script: one argparse tree, each command a thin call."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from stream_app.settings import (
    ENVIRONMENT,
    KAFKA_CLIENT_ENVIRONMENT,
    Settings,
    SettingsError,
)

# The environment each command reads (settings.ENVIRONMENT says what each one means).
_TOPICS = (
    "UPSELL_TOPIC_OFFERS",
    "UPSELL_TOPIC_PURCHASES",
    "UPSELL_TOPIC_RATES",
    "UPSELL_TOPIC_ALERTS",
    "UPSELL_TOPIC_DEADLETTER",
    "UPSELL_TOPIC_KPIS",
)
_LOCAL_KAFKA = (
    "KAFKA_BOOTSTRAP_SERVERS",
    "UPSELL_DATA_DIR",
    "XDG_CACHE_HOME",
    "KAFKA_SECURITY_PROTOCOL",
    "KAFKA_SASL_MECHANISM",
    "KAFKA_SASL_USERNAME",
    "KAFKA_SASL_PASSWORD",
)
_TOPICS_CREATE = (
    *KAFKA_CLIENT_ENVIRONMENT,
    "UPSELL_APP_ID",
    *_TOPICS,
    "UPSELL_PARTITIONS",
    "UPSELL_REPLICATION_FACTOR",
)
_WORKER = tuple(name for name in ENVIRONMENT if name != "XDG_CACHE_HOME")
_SIMULATE = (
    *KAFKA_CLIENT_ENVIRONMENT,
    "UPSELL_TOPIC_OFFERS",
    "UPSELL_TOPIC_PURCHASES",
    "UPSELL_PARTITIONS",
    "UPSELL_REPLICATION_FACTOR",
    "UPSELL_GRACE",
    "UPSELL_ATTRIBUTION_WINDOW",
)
_RATES = ("UPSELL_WEB_HOST", "UPSELL_WEB_PORT")


def _epilog(environment: Sequence[str], *examples: str) -> str:
    """The end of a command's help: the environment it reads and examples."""
    width = max(len(name) for name in environment)
    lines = ["environment (see docs/configuration.md):"]
    lines += [f"  {name:<{width}}  {ENVIRONMENT[name]}" for name in environment]
    lines += ["", "example:" if len(examples) == 1 else "examples:"]
    lines += [f"  {example}" for example in examples]
    return "\n".join(lines)


def _command(
    commands: Any,
    name: str,
    summary: str,
    description: str,
    environment: Sequence[str],
    *examples: str,
) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = commands.add_parser(
        name,
        help=summary,
        description=description,
        epilog=_epilog(environment, *examples),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    return parser


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="upsell-stream",
        description="Live upsell rates from offer and purchase events in Kafka.\nSettings "
        "come from the environment; each command's --help lists the ones it reads.",
        epilog="example, the whole product on this machine:\n  upsell-stream demo\n\n"
        "or step by step:\n  upsell-stream kafka start\n  upsell-stream worker &\n"
        "  upsell-stream simulate --rate 200 --duration 600\n  upsell-stream rates --watch",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    kafka = _command(
        commands,
        "kafka",
        "a local Kafka broker (or cluster) for development",
        "A local KRaft Kafka on loopback at KAFKA_BOOTSTRAP_SERVERS (one host:port), data "
        "and logs\nunder UPSELL_DATA_DIR/kafka.\n\n"
        "  start   download Kafka once (cached), start the broker and return once it "
        "accepts\n          clients; does nothing if it already runs\n"
        "  stop    stop it (every node of a cluster), leaving no process behind\n"
        "  status  say whether it runs (exit code 1 while a node is down)\n\n"
        "Each broker takes two ports: its own and its controller's (port + 1), from 1024 "
        "to 65535.\nWith --brokers N, broker k of N listens on port + 2(k - 1) (controller: "
        "the next port),\nits files in kafka/node-k; `stop` and `status` handle whatever "
        "runs there.",
        _LOCAL_KAFKA,
        "upsell-stream kafka start",
        "KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:29092 upsell-stream kafka start --brokers 3",
        "upsell-stream kafka status",
    )
    kafka.add_argument(
        "action",
        choices=["start", "stop", "status"],
        help="start, stop or ask about the local broker (see above)",
    )
    kafka.add_argument(
        "--brokers",
        type=int,
        default=1,
        metavar="N",
        help="start: a cluster of N combined broker+controller nodes (e.g. 3: ports P, P+2, "
        "P+4 for clients; Kafka's own topics on min(3, N) replicas, min ISR one less)",
    )
    kafka.add_argument(
        "--allow-privileged-port",
        action="store_true",
        help="start: accept ports below 1024 (which need root) in KAFKA_BOOTSTRAP_SERVERS",
    )

    _command(
        commands,
        "worker",
        "run the stream processor",
        "The stream processor: creates missing topics, then reads offers and purchases, "
        "publishes\nwindow records and alerts, and serves the page, /api/rates and "
        "/metrics on\nUPSELL_WEB_HOST:UPSELL_WEB_PORT until SIGINT or SIGTERM. "
        "Workers with the same\nUPSELL_APP_ID share the partitions.",
        _WORKER,
        "KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:9092 UPSELL_WEB_PORT=6066 upsell-stream worker",
    )

    demo = _command(
        commands,
        "demo",
        "run the local broker, the worker and the simulator; Ctrl-C stops all",
        "The whole product on this machine: starts the local broker (unless one runs), "
        "the worker and\nthe simulator with a rate drop that starts and ends, and prints "
        "where to look. Ctrl-C\n(or SIGTERM) stops everything it started. Logs go to "
        "UPSELL_DATA_DIR/demo. It resumes the\nprevious demo's data when that is small and "
        "of this version, else starts clean, and says which.\nIt sets livelier windows than "
        "the worker's defaults unless you set your own.",
        _WORKER,
        "upsell-stream demo",
        "upsell-stream demo --fresh",
        "UPSELL_DATA_DIR=/tmp/demo UPSELL_WEB_PORT=8066 upsell-stream demo",
    )
    demo.add_argument(
        "--fresh",
        action="store_true",
        help="remove the previous demo's data and start clean (default: resume it)",
    )

    rates = _command(
        commands,
        "rates",
        "show a running worker's rates in the terminal",
        "Asks a running worker (UPSELL_WEB_HOST:UPSELL_WEB_PORT) for its rates and prints "
        "them as a table:\nfitted to the terminal, or with every value in full when the "
        "output is piped.",
        _RATES,
        "upsell-stream rates --view campaign --window 1h",
        "upsell-stream rates --watch",
        "upsell-stream rates | grep email",
    )
    rates.add_argument(
        "--view",
        choices=["channel_segment", "campaign", "purchases"],
        default=None,
        help="which breakdown (default: channel_segment)",
    )
    rates.add_argument(
        "--window", default=None, help="a configured window size, e.g. 5m (default: the shortest)"
    )
    rates.add_argument("--watch", action="store_true", help="refresh every 2 s until Ctrl-C")

    topics = _command(
        commands,
        "topics",
        "manage the service's topics",
        "create: creates every topic of the service that is missing (inputs, outputs, "
        "dead-letter and\ninternal topics) with the configured partitions and replicas; "
        "prints one line per topic.",
        _TOPICS_CREATE,
        "UPSELL_PARTITIONS=12 upsell-stream topics create",
    )
    topics.add_argument("action", choices=["create"], help="create the missing topics")

    simulate = _command(
        commands,
        "simulate",
        "produce realistic events and print the ground truth used",
        "Produces offer and purchase events with known true conversion rates per channel and "
        "segment\nto the input topics, then prints the ground truth it used as JSON.",
        _SIMULATE,
        "upsell-stream simulate --rate 200 --duration 600 --drop email:15000:0.33:25000",
        "upsell-stream simulate --count 1000 --seed 7 --truth-file truth.json",
    )
    simulate.add_argument(
        "--rate",
        type=float,
        metavar="R",
        default=0.0,
        help="events per second (0: as fast as the broker takes them)",
    )
    simulate.add_argument(
        "--count",
        type=int,
        metavar="N",
        default=None,
        help="number of offers to present (default 10000 without --duration)",
    )
    simulate.add_argument(
        "--duration",
        type=float,
        metavar="S",
        default=None,
        help="seconds of wall-clock time to run (needs --rate)",
    )
    simulate.add_argument(
        "--seed",
        type=int,
        metavar="N",
        default=1,
        help="random seed; the same seed gives the same events (default 1)",
    )
    simulate.add_argument(
        "--customers",
        type=int,
        metavar="N",
        default=5000,
        help="number of distinct customers (default 5000)",
    )
    simulate.add_argument(
        "--duplicates", type=float, metavar="F", default=0.01, help="share of events sent twice"
    )
    simulate.add_argument(
        "--malformed",
        type=float,
        metavar="F",
        default=0.005,
        help="share of malformed messages added",
    )
    simulate.add_argument(
        "--start",
        default=None,
        metavar="T",
        help="event time of the first event, RFC 3339 (default: now)",
    )
    simulate.add_argument(
        "--seconds-per-offer",
        type=float,
        metavar="S",
        default=1.0,
        help="event-time seconds between consecutive offers",
    )
    simulate.add_argument(
        "--drop",
        default=None,
        metavar="CHANNEL:AFTER:FACTOR[:UNTIL]",
        help="after AFTER offers, multiply CHANNEL's true rates by FACTOR; "
        "from offer UNTIL on, the rates recover",
    )
    simulate.add_argument(
        "--random-keys",
        action="store_true",
        help="key messages at random (seeded) instead of by customer_id",
    )
    simulate.add_argument(
        "--truth-file",
        default=None,
        metavar="PATH",
        help="also write the ground truth JSON to this file",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _build_parser().parse_args(argv)
    try:
        return _run(args, Settings.from_env())
    except SettingsError as error:
        # A malformed setting: one line naming the variable, never a traceback.
        print(f"upsell-stream: {error}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace, settings: Settings) -> int:
    if args.command == "kafka":
        from stream_app.tools import local_kafka

        return local_kafka.run(
            args.action, settings, args.brokers, allow_privileged_port=args.allow_privileged_port
        )
    if args.command == "topics":
        from stream_app.runtime import topics

        return topics.create_all(settings)
    if args.command == "simulate":
        from stream_app.tools.simulator import command as simulator

        return simulator.run(args, settings)
    if args.command == "demo":
        from stream_app.tools import demo

        return demo.run(settings, fresh=args.fresh)
    if args.command == "rates":
        from stream_app.tools import terminal

        return terminal.run(settings, args.view, args.window, args.watch)
    from stream_app.runtime import worker

    return worker.run(settings)


if __name__ == "__main__":
    sys.exit(main())

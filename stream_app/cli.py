"""The `upsell-stream` console script: one argparse tree, each command a thin call."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from stream_app.settings import Settings, SettingsError


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="upsell-stream",
        description="Live upsell rates from offer and purchase events in Kafka. "
        "Settings come from the environment (see README).",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    kafka = commands.add_parser("kafka", help="a local single-node Kafka broker for development")
    kafka.add_argument("action", choices=["start", "stop", "status"])

    commands.add_parser("worker", help="run the stream processor")

    demo = commands.add_parser(
        "demo", help="run the local broker, the worker and the simulator; Ctrl-C stops all")
    demo.add_argument("--fresh", action="store_true",
                      help="remove the previous demo's data and start clean (default: resume it)")

    rates = commands.add_parser("rates", help="show a running worker's rates in the terminal")
    rates.add_argument("--view", choices=["channel_segment", "campaign", "purchases"],
                       default=None)
    rates.add_argument("--window", default=None, help="a configured window size, e.g. 5m")
    rates.add_argument("--watch", action="store_true", help="refresh every 2 s until Ctrl-C")

    topics = commands.add_parser("topics", help="manage the service's topics")
    topics.add_argument("action", choices=["create"])

    simulate = commands.add_parser(
        "simulate", help="produce realistic events and print the ground truth used"
    )
    simulate.add_argument("--rate", type=float, default=0.0,
                          help="events per second (0: as fast as the broker takes them)")
    simulate.add_argument("--count", type=int, default=None,
                          help="number of offers to present (default 10000 without --duration)")
    simulate.add_argument("--duration", type=float, default=None,
                          help="seconds of wall-clock time to run (needs --rate)")
    simulate.add_argument("--seed", type=int, default=1)
    simulate.add_argument("--customers", type=int, default=5000)
    simulate.add_argument("--duplicates", type=float, default=0.01,
                          help="share of events sent twice")
    simulate.add_argument("--malformed", type=float, default=0.005,
                          help="share of malformed messages added")
    simulate.add_argument("--start", default=None,
                          help="event time of the first event, RFC 3339 (default: now)")
    simulate.add_argument("--seconds-per-offer", type=float, default=1.0,
                          help="event-time seconds between consecutive offers")
    simulate.add_argument("--drop", default=None, metavar="CHANNEL:AFTER:FACTOR[:UNTIL]",
                          help="after AFTER offers, multiply CHANNEL's true rates by FACTOR; "
                          "from offer UNTIL on, the rates recover")
    simulate.add_argument("--random-keys", action="store_true",
                          help="key messages at random (seeded) instead of by customer_id")
    simulate.add_argument("--truth-file", default=None,
                          help="also write the ground truth JSON to this file")
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
        from stream_app import local_kafka

        return local_kafka.run(args.action, settings)
    if args.command == "topics":
        from stream_app import topics

        return topics.create_all(settings)
    if args.command == "simulate":
        from stream_app.simulator import command as simulator

        return simulator.run(args, settings)
    if args.command == "demo":
        from stream_app import demo

        return demo.run(settings, fresh=args.fresh)
    if args.command == "rates":
        from stream_app import terminal

        return terminal.run(settings, args.view, args.window, args.watch)
    from stream_app import worker

    return worker.run(settings)


if __name__ == "__main__":
    sys.exit(main())

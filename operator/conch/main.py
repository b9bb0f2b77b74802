"""The `conch-operator` console script: flags, logging, metrics server, then kopf's event loop.

Logging policy: INFO says what changed (the controller logs each transition it posts as an Event);
per-event lines are DEBUG. kopf logs "Handler '...' succeeded." at INFO for every watch event it
hands us (one per child event: thousands in a busy cluster), so those records are demoted here.
"""

from __future__ import annotations

import argparse
import logging

import kopf

from conch import metrics


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line flags."""
    parser = argparse.ArgumentParser(prog="conch-operator", description="Run the Conch operator.")
    scope = parser.add_mutually_exclusive_group()
    scope.add_argument("--namespace", "-n", action="append", default=[], help="watch this namespace (repeat)")
    scope.add_argument("--all-namespaces", "-A", action="store_true", help="watch every namespace (default)")
    parser.add_argument("--metrics-port", type=int, default=8080, help="port of /metrics; 0 disables it")
    parser.add_argument(
        "--metrics-address", default="127.0.0.1", help="address /metrics binds (the chart passes 0.0.0.0)"
    )
    parser.add_argument(
        "--liveness", default=None, help="liveness endpoint, e.g. http://0.0.0.0:8081/healthz"
    )
    parser.add_argument("--verbose", "-v", action="store_true")
    return parser.parse_args(argv)


class DemoteHandlerLines(logging.Filter):
    """Rewrite kopf's per-event INFO lines ("Handler 'x' succeeded.") as DEBUG records."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.INFO and str(record.msg).startswith("Handler "):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)
        return True


def main(argv: list[str] | None = None) -> None:
    """Run until interrupted."""
    args = parse(argv)
    # kopf.configure sets the root level (DEBUG with -v, else INFO) and installs the one root handler;
    # a second (basicConfig's) would print every line twice.
    kopf.configure(verbose=args.verbose, log_format=kopf.LogFormat.PLAIN)
    for handler in logging.getLogger().handlers:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger("kopf.objects").addFilter(DemoteHandlerLines())
    if args.metrics_port:
        metrics.serve(args.metrics_port, args.metrics_address)
    from conch import handlers  # registers the kopf handlers

    del handlers
    kopf.run(
        standalone=True,
        clusterwide=not args.namespace,
        namespaces=args.namespace,
        liveness_endpoint=args.liveness,
    )

"""The `conch-operator` console script: flags, logging, metrics server, then kopf's event loop."""

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


def main(argv: list[str] | None = None) -> None:
    """Run until interrupted."""
    args = parse(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    kopf.configure(verbose=args.verbose, log_format=kopf.LogFormat.PLAIN)
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

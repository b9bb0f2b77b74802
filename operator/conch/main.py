"""The `conch-operator` console script: flags, logging, metrics server, then kopf's event loop.

Logging policy: INFO says what changed (the controller logs each transition it posts as an Event);
per-event lines are DEBUG. kopf logs "Handler '...' succeeded." at INFO for every watch event it
hands us (one per child event: thousands in a busy cluster), so those records are demoted here.
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import uuid

import kopf

from conch import controller, handlers, leader, metrics, snapshot


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
    parser.add_argument(
        "--default-auth-mode", choices=("none", "token"), default="none",
        help="spec.auth.mode of a ModelDeployment that sets none (the chart passes token; default none)",
    )  # fmt: skip
    parser.add_argument("--verbose", "-v", action="store_true")
    parser.add_argument("--log-format", choices=("plain", "json"), default="plain", help="log line format")
    parser.add_argument("--workers", type=int, default=4, help="reconcile passes at once (default 4)")
    parser.add_argument(
        "--kube-api-qps", type=float, default=100.0,
        help="requests per second to the apiserver, sustained (client-side limit; default 100)",
    )  # fmt: skip
    parser.add_argument(
        "--kube-api-burst", type=int, default=200, help="requests at once above the QPS (default 200)"
    )
    parser.add_argument(
        "--resync-seconds", type=float, default=600.0,
        help="idle passes per ModelDeployment (+-10%% jitter); events drive everything else (default 600)",
    )  # fmt: skip
    parser.add_argument(
        "--no-cache",
        action="store_true",
        help="read from the apiserver on every pass, not from the watch-fed cache",
    )
    election = parser.add_argument_group("leader election (run several replicas, one acts)")
    election.add_argument("--leader-elect", action="store_true", help="act only while holding the Lease")
    election.add_argument(
        "--leader-election-namespace", default=os.environ.get("POD_NAMESPACE", "default"),
        help="namespace of the Lease (default $POD_NAMESPACE, else default)",
    )  # fmt: skip
    election.add_argument("--leader-election-id", default="conch-operator", help="name of the Lease")
    election.add_argument("--lease-duration", type=float, default=15.0, metavar="S")
    election.add_argument("--renew-deadline", type=float, default=10.0, metavar="S")
    election.add_argument("--retry-period", type=float, default=2.0, metavar="S")
    store = parser.add_argument_group("model store garbage collection")
    store.add_argument(
        "--store-gc-grace", type=int, default=86400, metavar="S",
        help="remove unreferenced repositories untouched this long (default one day)",
    )  # fmt: skip
    store.add_argument("--no-store-gc", action="store_true", help="never remove repositories")
    return parser.parse_args(argv)


def leader_election(args: argparse.Namespace) -> handlers.LeaderElection | None:
    """The Lease settings from flags (identity: the pod's name, or host name, plus a random suffix)."""
    if not args.leader_elect:
        return None
    try:
        timing = leader.Timing(args.lease_duration, args.renew_deadline, args.retry_period)
    except ValueError as exc:
        raise SystemExit(f"conch-operator: --lease-duration/--renew-deadline/--retry-period: {exc}") from exc
    identity = f"{os.environ.get('POD_NAME') or socket.gethostname()}_{uuid.uuid4().hex[:8]}"
    return handlers.LeaderElection(args.leader_election_namespace, args.leader_election_id, identity, timing)


class DemoteHandlerLines(logging.Filter):
    """Rewrite kopf's per-event INFO lines ("Handler 'x' succeeded.") as DEBUG records."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.INFO and str(record.msg).startswith("Handler "):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)
        return True


def check(args: argparse.Namespace) -> None:
    """Refuse flags out of range, naming the flag (before anything starts)."""
    if args.store_gc_grace < 0:
        raise SystemExit("conch-operator: --store-gc-grace: must be >= 0 seconds")
    if args.resync_seconds < 5:
        raise SystemExit("conch-operator: --resync-seconds: must be >= 5")
    if not 1 <= args.workers <= 64:
        raise SystemExit("conch-operator: --workers: must be 1..64")
    if args.kube_api_qps <= 0 or args.kube_api_burst < 1:
        raise SystemExit("conch-operator: --kube-api-qps must be > 0 and --kube-api-burst >= 1")


def main(argv: list[str] | None = None) -> None:
    """Run until interrupted."""
    args = parse(argv)
    check(args)
    snapshot.DEFAULT_AUTH_MODE[0] = args.default_auth_mode
    # kopf.configure sets the root level (DEBUG with -v, else INFO) and installs the one root handler;
    # a second (basicConfig's) would print every line twice.
    json_logs = args.log_format == "json"
    kopf.configure(
        verbose=args.verbose, log_format=kopf.LogFormat.JSON if json_logs else kopf.LogFormat.PLAIN
    )
    for handler in logging.getLogger().handlers if not json_logs else []:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger("kopf.objects").addFilter(DemoteHandlerLines())
    exact = bool(args.namespace) and not any(set(n) & set("*?[]!") for n in args.namespace)
    grace = None if args.no_store_gc else args.store_gc_grace
    controller.IDLE_REQUEUE = args.resync_seconds
    handlers.configure(
        handlers.Options(
            leader_election(args), exact, grace, args.workers, not args.no_cache,
            args.kube_api_qps, args.kube_api_burst,
        )
    )  # fmt: skip
    if args.metrics_port:
        metrics.serve(args.metrics_port, args.metrics_address)
    kopf.run(
        standalone=True,
        clusterwide=not args.namespace,
        namespaces=args.namespace,
        liveness_endpoint=args.liveness,
    )

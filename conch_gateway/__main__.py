"""`conch-gateway --triton-grpc 127.0.0.1:8001 --model NAME --port 9000` (or `python -m conch_gateway`): the
gateway process; `conch-gateway auth-proxy ...`: the serving pod's token-checking front door (authproxy.py),
a subcommand so the serving image needs no second launcher."""

from __future__ import annotations

import argparse
import os
import sys

import uvicorn

from .app import create_app
from .triton import Triton


def main() -> None:
    if sys.argv[1:2] == ["auth-proxy"]:
        from . import authproxy

        authproxy.main(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(prog="conch_gateway", description=__doc__)
    parser.add_argument("--triton-grpc", default=os.environ.get("CONCH_TRITON_GRPC", "127.0.0.1:8001"))
    parser.add_argument(
        "--model", default=os.environ.get("CONCH_MODEL"), required="CONCH_MODEL" not in os.environ
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000)
    parser.add_argument(
        "--drain-seconds", type=int, default=5, help="after SIGTERM, how long streams in flight may go on"
    )
    args = parser.parse_args()
    app = create_app(Triton(args.triton_grpc, args.model))
    # SIGTERM: no new connections, idle keep-alive ones close at once, requests in flight (streams) get
    # up to --drain-seconds to end (the operator passes Triton's exit timeout: a rollout cuts no stream)
    uvicorn.run(
        app, host=args.host, port=args.port, log_level="warning", timeout_graceful_shutdown=args.drain_seconds
    )


if __name__ == "__main__":
    main()

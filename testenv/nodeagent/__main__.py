"""`python -m testenv.nodeagent` (from the repository root): run the node agent until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from pathlib import Path
from types import FrameType

from testenv.nodeagent import agent, bundle


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m testenv.nodeagent", description=__doc__)
    p.add_argument("--kubeconfig", default=None)
    p.add_argument("--node-name", default="conch-agent-1")
    p.add_argument("--pod-cidr", default="127.65.0.0/16", help="inside 127.0.0.0/8; one IP per pod")
    p.add_argument("--state-dir", type=Path, required=True, help="pod logs, volumes and the backends copy")
    p.add_argument("--cpu", default="8")
    p.add_argument("--memory", default="16Gi")
    p.add_argument("--gpus", type=int, default=0, help="nvidia.com/gpu to advertise (pods still run on CPU)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    args.state_dir.mkdir(parents=True, exist_ok=True)
    api = agent.Api(args.kubeconfig, args.node_name)
    node_agent = agent.Agent(api, bundle.toolchain(args.state_dir), args.state_dir, args.pod_cidr,
                             cpu=args.cpu, memory=args.memory, gpus=args.gpus)  # fmt: skip
    done = threading.Event()

    def stop(signum: int, frame: FrameType | None) -> None:
        done.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    def run() -> None:
        try:
            node_agent.run()
        finally:
            done.set()

    threading.Thread(target=run, name="agent", daemon=True).start()
    done.wait()
    node_agent.shutdown()


if __name__ == "__main__":
    main()

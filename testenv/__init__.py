"""Conch's test environment: what the tests, the demo and the benchmarks run Conch on.

Not shipped in any image. `testenv.nodeagent` is a test-only kubelet for one node whose pods run as
local processes; `testenv.monitoring_bridge` hands the Prometheus Operator's generated config to a
prometheus process on the host. The shell side: `cluster.sh` (the local control plane),
`monitoring.sh` (the Prometheus stack against it), `realnode.sh` (one real kubelet node in its own
network namespace), all three sourcing `lib.sh`.
"""

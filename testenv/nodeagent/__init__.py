"""A test-only node agent: registers one extra node and runs the pods bound to it as local processes.

The local cluster's kwok nodes never run anything. This agent plays a kubelet for one node so that the
end-to-end test and `make demo` run the real builder and the real tritonserver (the one bundled with
nvidia-pytriton) from the pod specs the operator renders: volumes become local directories, each pod
gets its own IP in 127.0.0.0/8, probes are real HTTP/TCP checks, and pod status (phase, readiness,
restarts, exit codes, termination messages) is reported through the API as a kubelet would.
"""

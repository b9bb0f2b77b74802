# Conch developer entry points. `make demo` and `make test` are the two a newcomer needs; both set
# up what they use (venv, Go-built control plane) on first run and reuse it afterwards.
SHELL := /bin/bash
.DEFAULT_GOAL := help
PY ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
CACHE ?= $(HOME)/.cache/conch
STATE ?= $(HOME)/.local/state/conch/cluster
export KUBECONFIG ?= $(STATE)/kubeconfig
export PATH := $(CURDIR)/$(VENV)/bin:$(CACHE)/bin:$(PATH)
# A passed test's tmp_path goes at once, and the base directory at the end of a passing run: the suite's
# builds and stores are GBs, and the real node after `make test` needs the disk (CI once failed on
# "only 1670 MiB free" with pytest keeping three runs of them). Here, not in pyproject.toml, whose
# every edit rebuilds the images' dependency layers.
PYTEST := $(VPY) -m pytest -o tmp_path_retention_policy=failed

.PHONY: monitoring-up monitoring-down bench-batching bench-auth bench-llm
.PHONY: help venv tools cluster-up cluster-down lint typecheck test test-unit test-cluster test-serving test-e2e demo bench bench-text bench-distill bench-generation clean

help:
	@echo "make demo         run Conch end to end on the local cluster (sets everything up)"
	@echo "make test         lint, type-check and run every test (unit, cluster, serving)"
	@echo "make tools        build etcd/kube-*/kubectl/kwok/helm from the Go proxy into $(CACHE)/bin"
	@echo "make cluster-up   start the local control plane; prints export KUBECONFIG=..."
	@echo "make cluster-down stop it and remove its state"
	@echo "make monitoring-up   Prometheus Operator + Prometheus + prometheus-adapter on the local cluster"
	@echo "make monitoring-down stop them"
	@echo "make bench        run the benchmarks (JSON under bench/results/)"
	@echo "make bench-text   only the text (MiniLM offline + served) benchmark"
	@echo "make bench-distill only the distillation (digits CNN x 5 seeds, MiniLM 6 -> 3 layers) benchmark"
	@echo "make bench-auth   auth proxy overhead: p50/p99 direct vs through the proxy at concurrency 8"
	@echo "make bench-scale  N ModelDeployments vs raw applies on the local cluster (BENCH_SCALE_N=1000)"
	@echo "make bench-llm    SmolLM2 under load (guidellm, concurrency 1/8/32): Conch int4 + gateway vs llama-server"

$(VENV)/.stamp: pyproject.toml
	test -x $(VPY) || $(PY) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip
	$(VPY) -m pip install -q -e '.[dev]'
	touch $@

venv: $(VENV)/.stamp

tools:
	hack/build-tools.sh

cluster-up: tools
	@testenv/cluster.sh up

cluster-down:
	@testenv/cluster.sh down

monitoring-up: venv cluster-up
	@testenv/monitoring.sh up

monitoring-down:
	@testenv/monitoring.sh down

lint: venv tools
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(CACHE)/bin/helm lint --strict charts/conch

typecheck: venv
	$(VENV)/bin/mypy

test: venv tools lint typecheck
	$(PYTEST)

test-unit: venv
	$(PYTEST) -m unit

test-cluster: venv tools
	$(PYTEST) -m cluster

test-serving: venv
	$(PYTEST) -m serving

test-e2e: venv tools
	$(PYTEST) -m e2e

demo: venv cluster-up
	$(VPY) -m hack.demo

bench: venv
	$(VPY) -m bench.bench_builder
	$(VPY) -m bench.bench_text
	$(VPY) -m bench.bench_distill
	$(VPY) -m bench.bench_batching
	$(VPY) -m bench.bench_generation
	$(VPY) -m bench.bench_auth
	$(VPY) -m bench.bench_llm_load

bench-text: venv
	$(VPY) -m bench.bench_text

bench-distill: venv
	$(VPY) -m bench.bench_distill

BENCH_SCALE_N ?= 1000
bench-scale: venv cluster-up  ## not in `make bench`: minutes of load on the shared control plane
	$(VPY) -m bench.bench_scale $(foreach n,$(BENCH_SCALE_N),--n $(n))

bench-auth: venv
	$(VPY) -m bench.bench_auth

bench-batching: venv tools  ## Triton dynamic batching vs none at concurrency 16; time to the HPA's scale-up
	$(VPY) -m bench.bench_batching

bench-generation: venv  ## SmolLM2 int4/int8 served by Triton vs transformers fp32 (issue 20)
	$(VPY) -m bench.bench_generation

# issue 21: builds llama-server (hack/build-llama-server.sh) and the guidellm venv (hack/guidellm-venv.sh)
# into $(CACHE) on first run (about 20 minutes on 2 cores), then about 15 minutes of load
bench-llm: venv  ## SmolLM2 under load: Conch int4 + OpenAI gateway vs llama.cpp's llama-server (guidellm)
	HF_HUB_OFFLINE=1 $(VPY) -m bench.bench_llm_load

clean:
	rm -rf .mypy_cache .ruff_cache .pytest_cache

# ---- operator (owned by the operator engineer; appended block) ---------------------------------
.PHONY: crds install run
crds: venv  ## regenerate crds/ from the typed API (operator/conch/api); the chart reads them through its files/crds link
	$(VPY) -m conch.api.crdgen crds

install: venv  ## apply crds/ to the cluster in $KUBECONFIG
	$(CACHE)/bin/kubectl apply --server-side --force-conflicts -f crds/

run: venv install  ## run the operator locally against $KUBECONFIG (all namespaces)
	$(VPY) -m conch --all-namespaces --metrics-port 8080 --liveness http://127.0.0.1:8081/healthz
# ---- end operator block -------------------------------------------------------------------------

# ---- images and the real node (issue #13; hack/images.sh, testenv/realnode.sh) ------------------------
.PHONY: images realnode-up realnode-down test-realnode
images: venv  ## build the operator, builder and Triton images offline (see images/README.md)
	hack/images.sh build

realnode-up: tools images  ## one real node (kubelet + containerd + runc) in its own network namespace
	hack/build-tools.sh kubelet
	testenv/realnode.sh up

realnode-down:
	testenv/realnode.sh down

test-realnode: realnode-up  ## the real-node e2e, run inside the node's network namespace
	testenv/realnode.sh exec $(PYTEST) tests/realnode
# ---- end images block ------------------------------------------------------------------------------

"""Golden tests of the pure renderers: each child kind for the examples, compared with tests/operator/golden/.

Regenerate after an intended change with CONCH_UPDATE_GOLDEN=1 and review the diff.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from conch.api import keys, quantity, types
from conch.render import (
    common,
    deployment,
    hpa,
    job,
    networkpolicy,
    pdb,
    secret,
    service,
    servicemonitor,
    verify,
)
from model_repo_builder import cli
from model_repo_builder.sources import limits
from model_repo_builder.triton.python_backend import llmsched

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[2]
GOLDEN = Path(__file__).parent / "golden"
EXAMPLES = ["gpu-resnet", "cpu-digits", "autoscaling-minilm", "canary-digits", "cpu-smollm2"]


def owner(example: str) -> common.Owner:
    doc = yaml.safe_load((ROOT / "examples" / f"{example}.yaml").read_text())
    spec = types.ModelDeploymentSpec.model_validate(doc["spec"])
    return common.Owner(doc["metadata"]["name"], "ns", "uid-1", spec)


def children(o: common.Owner) -> dict[str, Any]:
    served = deployment.Served(o.spec.version, "bk-0123456789abcdef", o.spec.model.name)
    return {
        "job": job.render_job(o, o.spec.version, keys.spec_key(o.spec)),
        "deployment": deployment.render_deployment(o, served),
        "service": service.render_service(o),
        "hpa": hpa.render_hpa(o),
        "pdb": pdb.render_pdb(o),
        "servicemonitor": servicemonitor.render_servicemonitor(o),
        "secret": secret.render_secret(o, "golden-admin-key"),
        **(
            {"canary": deployment.render_canary_deployment(o, served, 1)}
            if o.spec.rollout.strategy == "canary"
            else {}
        ),
    }


@pytest.mark.parametrize("example", EXAMPLES)
def test_golden(example: str) -> None:
    text = yaml.safe_dump(children(owner(example)), sort_keys=True, width=120)
    path = GOLDEN / f"{example}.yaml"
    if os.environ.get("CONCH_UPDATE_GOLDEN") == "1":
        path.write_text(text)
    assert path.read_text() == text, f"{path.name} differs: rerun with CONCH_UPDATE_GOLDEN=1 and review"


def test_triton_admin_key_comes_from_the_secret_and_stays() -> None:
    o = owner("cpu-digits")
    dep = deployment.render_deployment(o, deployment.Served("v1", "bk", "digits"))
    triton = dep["spec"]["template"]["spec"]["containers"][0]
    ref = triton["env"][0]["valueFrom"]["secretKeyRef"]
    assert ref == {"name": secret.name(o), "key": secret.DATA_KEY}
    restricted = [a for a in triton["args"] if "restricted" in a]
    assert restricted and all(a.endswith(f"=$({triton['env'][0]['name']})") for a in restricted)
    assert "--model-control-mode=none" in triton["args"]
    key = secret.new_key()
    assert key != secret.new_key() and len(key) >= 43
    rendered = secret.render_secret(o, key)
    assert secret.key_of(rendered) == key  # a pass reads back the key it applied: the Secret is stable
    assert secret.key_of(None) is None and secret.key_of({"data": {secret.DATA_KEY: "%%"}}) is None


def test_gpu_pod_shape() -> None:
    o = owner("gpu-resnet")
    dep = deployment.render_deployment(o, deployment.Served("v1", "bk", "resnet"))
    pod = dep["spec"]["template"]["spec"]
    triton = pod["containers"][0]
    assert triton["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    assert dep["spec"]["strategy"]["rollingUpdate"] == {"maxUnavailable": 0, "maxSurge": 1}
    assert triton["readinessProbe"]["httpGet"]["path"] == "/v2/models/resnet/ready"
    assert triton["startupProbe"]["failureThreshold"] * triton["startupProbe"]["periodSeconds"] >= 600
    assert "--model-repository=/store/repositories/bk" in triton["args"]
    assert [p["containerPort"] for p in triton["ports"]] == [8000, 8001, 8002]
    assert pod["volumes"][0]["persistentVolumeClaim"]["readOnly"] is True
    assert dep["metadata"]["ownerReferences"][0]["controller"] is True


@pytest.mark.parametrize("example", ["gpu-resnet", "cpu-smollm2", "canary-digits"])
def test_every_serving_pod_verifies_its_repository_first(example: str) -> None:
    """The init container checks exactly the repository Triton loads, from the same image, read-only,
    restricted, small, and its message (naming the files) is where the operator reads it."""
    o = owner(example)
    served = deployment.Served("v1", "bk-1", o.spec.model.name)
    deps = [deployment.render_deployment(o, served), deployment.render_canary_deployment(o, served, 1)]
    for pod in (d["spec"]["template"]["spec"] for d in deps):
        [init] = pod["initContainers"]
        triton = pod["containers"][0]
        assert init["name"] == verify.CONTAINER and init["command"] == ["conch-verify"]
        assert init["image"] == triton["image"] == o.spec.serving.image
        assert f"--model-repository={init['args'][0]}" in triton["args"]
        assert init["args"][1:] == ["--message-file=/dev/termination-log"]
        assert init["terminationMessagePath"] == "/dev/termination-log"
        assert init["volumeMounts"] == [{"name": "model-store", "mountPath": "/store", "readOnly": True}]
        assert init["securityContext"] == common.restricted_container_security()
        assert init["securityContext"]["readOnlyRootFilesystem"] is True
        assert init["resources"] == {
            "requests": {"cpu": "100m", "memory": "64Mi"},
            "limits": {"memory": "128Mi"},
        }
        assert "nvidia.com/gpu" not in str(init), "verifying needs no GPU"


def test_cpu_pod_has_no_gpu() -> None:
    o = owner("cpu-digits")
    pod = deployment.render_deployment(o, deployment.Served("v1", "bk", "digits"))["spec"]["template"]["spec"]
    assert "nvidia.com/gpu" not in str(pod)
    assert pdb.render_pdb(o) is None and hpa.render_hpa(o) is None


def test_autoscaling_leaves_replicas_to_the_hpa() -> None:
    o = owner("autoscaling-minilm")
    dep = deployment.render_deployment(o, deployment.Served("v1", "bk", "minilm"))
    assert "replicas" not in dep["spec"]
    metrics = hpa.render_hpa(o)["spec"]["metrics"]  # type: ignore[index]
    assert {m["type"] for m in metrics} == {"Resource", "Pods"}
    assert "behavior" not in hpa.render_hpa(o)["spec"]  # type: ignore[index]  # Kubernetes' defaults


def test_hpa_stabilisation_windows_come_from_the_spec() -> None:
    o = owner("autoscaling-minilm")
    scaling = o.spec.autoscaling.model_copy(update={"scale_down_stabilization_seconds": 5})  # type: ignore[union-attr]
    o = dataclasses.replace(o, spec=o.spec.model_copy(update={"autoscaling": scaling}))
    assert hpa.render_hpa(o)["spec"]["behavior"] == {"scaleDown": {"stabilizationWindowSeconds": 5}}  # type: ignore[index]


def test_builder_job_tells_the_builder_its_deadline() -> None:
    o = owner("cpu-digits")
    env = job.render_job(o, "v1", "k")["spec"]["template"]["spec"]["containers"][0]["env"]
    assert env[0] == {"name": job.DEADLINE_ENV, "value": str(o.spec.build.active_deadline_seconds)}


def test_builder_job_contract() -> None:
    minilm = owner("autoscaling-minilm")
    assert job.command(minilm)[2] == "/store/models/all-MiniLM-L6-v2"
    source = {"url": "https://models.example.com/all-MiniLM-L6-v2.tar.gz", "sha256": "ab" * 32}
    spec = minilm.spec.model_copy(
        update={"model": minilm.spec.model.model_copy(update={"source": types.ModelSource(**source)})}
    )
    o = common.Owner(minilm.name, minilm.namespace, minilm.uid, spec)
    rendered = job.render_job(o, o.spec.version, keys.spec_key(o.spec))
    container = rendered["spec"]["template"]["spec"]["containers"][0]
    cmd = container["command"]
    assert cmd[:3] == ["model-repo-builder", "build", o.spec.model.source.url]
    assert cmd[cmd.index("--sha256") + 1] == o.spec.model.source.sha256
    assert cmd[cmd.index("--summary-file") + 1] == "/dev/termination-log"
    assert cmd[cmd.index("--out") + 1] == "/store/repositories"
    assert container["terminationMessagePolicy"] == "FallbackToLogsOnError"
    assert rendered["metadata"]["name"] == keys.job_name("minilm", keys.spec_key(o.spec))
    digits = owner("cpu-digits")
    assert job.command(digits)[2] == "/store/models/digits.pt2"


def _with_build(o: common.Owner, **build: object) -> common.Owner:
    spec = o.spec.model_copy(update={"build": types.Build.model_validate(build)})
    return common.Owner(o.name, o.namespace, o.uid, spec)


def _source_cap_and_scratch(o: common.Owner) -> tuple[int, object]:
    pod = job.render_job(o, "v1", "k")["spec"]["template"]["spec"]
    env = {e["name"]: e["value"] for e in pod["containers"][0]["env"]}
    tmp = next(v for v in pod["volumes"] if v["name"] == "tmp")
    assert {"name": "tmp", "mountPath": "/tmp"} in pod["containers"][0]["volumeMounts"]
    return int(env[limits.ENV]), tmp["emptyDir"]["sizeLimit"]


@pytest.mark.parametrize(
    ("size", "cap", "scratch"),
    [
        (None, 50 * 2**30, "200Gi"),
        ("2Gi", 2 * 2**30, "8Gi"),
        ("1.5Gi", 1536 * 2**20, "6Gi"),
        (10**9, 10**9, "3906250Ki"),
        (10**9 + 1, 10**9 + 1, "4000000004"),
    ],
)
def test_builder_job_caps_the_source_and_limits_its_scratch_volume(
    size: int | str | None, cap: int, scratch: str
) -> None:
    o = owner("cpu-digits")
    if size is not None:
        o = _with_build(o, maxSourceSize=size)
    assert _source_cap_and_scratch(o) == (cap, scratch)
    assert types.SCRATCH_PER_SOURCE * cap == quantity.parse(scratch)


def test_the_builder_and_the_api_default_to_one_source_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    """spec.build.maxSourceSize unset and --max-source-bytes left out mean the same bytes."""
    monkeypatch.delenv(limits.ENV, raising=False)
    args = cli._parser().parse_args(["build", "m.onnx", "--out", "store"])
    assert types.Build().max_source_bytes() == args.max_source_bytes == limits.DEFAULT_MAX_SOURCE_BYTES
    env = job.render_job(owner("cpu-digits"), "v1", "k")["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {"name": limits.ENV, "value": str(limits.DEFAULT_MAX_SOURCE_BYTES)} in env
    monkeypatch.setenv(limits.ENV, "4096")  # what the Job sets is the flag's default
    assert cli._parser().parse_args(["build", "m.onnx", "--out", "store"]).max_source_bytes == 4096


def test_canary_pods_are_behind_the_one_service_and_apart_from_the_stable() -> None:
    o = owner("canary-digits")
    served = deployment.Served("1.1.0", "bk-new", "digits")
    stable = deployment.render_deployment(o, deployment.Served("1.0.0", "bk-old", "digits"))
    canary = deployment.render_canary_deployment(o, served, 2)
    assert canary["metadata"]["name"] == "digits-canary" and canary["spec"]["replicas"] == 2
    pod_labels = canary["spec"]["template"]["metadata"]["labels"]
    selector = service.render_service(o)["spec"]["selector"]
    assert selector.items() <= pod_labels.items(), "the Service must send the canary its share"
    assert pdb.render_pdb(o)["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()  # type: ignore[index]
    assert canary["spec"]["selector"]["matchLabels"] == {**stable["spec"]["selector"]["matchLabels"],
                                                         deployment.LABEL_TRACK: "canary"}  # fmt: skip
    assert pod_labels[deployment.LABEL_TRACK] == "canary"
    assert pod_labels["serving.conch.dev/version"] == "1.1.0"
    assert deployment.LABEL_TRACK not in stable["spec"]["template"]["metadata"]["labels"]
    stable_container = stable["spec"]["template"]["spec"]["containers"][0]
    assert canary["spec"]["template"]["spec"]["containers"][0]["resources"] == stable_container["resources"]


def test_a_generative_model_gets_every_child_an_encoder_gets_and_the_gateway_everywhere() -> None:
    """HPA, PDB, ServiceMonitor, NetworkPolicy and a canary for a generator, each pod with the gateway."""
    base = owner("cpu-smollm2")
    spec = base.spec.model_copy(
        update={
            "replicas": None,
            "autoscaling": types.Autoscaling(
                min_replicas=2, max_replicas=4, target_cpu_utilization_percentage=70
            ),
            "monitoring": types.Monitoring(service_monitor=types.ServiceMonitorSpec(enabled=True)),
            "serving": base.spec.serving.model_copy(
                update={"network_policy": types.NetworkPolicySpec(enabled=True)}
            ),
        }
    )
    o = dataclasses.replace(base, spec=spec)
    served = deployment.Served("2", "bk-2", "smollm2")
    assert hpa.render_hpa(o) is not None and servicemonitor.render_servicemonitor(o) is not None
    assert pdb.render_pdb(o)["spec"]["maxUnavailable"] == 1  # type: ignore[index]
    policy = networkpolicy.render_networkpolicy(o)
    assert policy is not None
    assert [p["port"] for p in policy["spec"]["ingress"][0]["ports"]] == [8000, 8001, 9000]
    for dep in (deployment.render_deployment(o, served), deployment.render_canary_deployment(o, served, 1)):
        names = [c["name"] for c in dep["spec"]["template"]["spec"]["containers"]]
        assert names == ["triton", "openai"]
    assert "openai" not in service.endpoints(owner("cpu-digits"))
    assert [
        c["name"] for c in deployment.pod_template(owner("cpu-digits"), served)["spec"]["containers"]
    ] == ["triton"]


def _triton_env(o: common.Owner) -> dict[str, str]:
    served = deployment.Served("1", "bk-1", o.spec.model.name)
    (triton,) = [c for c in deployment.pod_template(o, served)["spec"]["containers"] if c["name"] == "triton"]
    return {e["name"]: e.get("value", "(from a secret)") for e in triton["env"]}


def test_a_generators_scheduler_limits_reach_tritons_environment_and_rebuild_nothing() -> None:
    base = owner("cpu-smollm2")
    limits = types.Generation(max_sequences=3, max_tokens_in_flight=4096, max_queue=0)
    spec = base.spec.model_copy(
        update={"serving": base.spec.serving.model_copy(update={"generation": limits})}
    )
    o = dataclasses.replace(base, spec=spec)
    env = _triton_env(o)
    assert env["CONCH_LLM_MAX_SEQUENCES"] == "3" and env["CONCH_LLM_MAX_QUEUE"] == "0"
    assert env["CONCH_LLM_MAX_TOKENS_IN_FLIGHT"] == "4096"
    assert _triton_env(base)["CONCH_LLM_MAX_SEQUENCES"] == str(types.Generation().max_sequences)
    assert keys.spec_key(o.spec) == keys.spec_key(base.spec)  # the same build: a serving setting
    assert not [name for name in _triton_env(owner("cpu-digits")) if name.startswith("CONCH_LLM_")]


def test_a_generators_decoder_threads_are_its_cpu_limit_in_whole_cpus() -> None:
    base = owner("cpu-smollm2")
    for limit, threads in (("2", "2"), ("1500m", "2"), ("250m", "1"), (None, None)):
        resources = {"requests": {"cpu": "100m"}, **({"limits": {"cpu": limit}} if limit else {})}
        serving = base.spec.serving.model_copy(update={"resources": resources})
        env = _triton_env(dataclasses.replace(base, spec=base.spec.model_copy(update={"serving": serving})))
        assert env.get("CONCH_LLM_THREADS") == threads, limit
    limits = llmsched.Limits.from_env({"CONCH_LLM_THREADS": "3"})
    assert limits.decoder_threads() == 3
    assert llmsched.Limits.from_env({}).decoder_threads() == len(os.sched_getaffinity(0))


def test_triton_exits_before_the_kubelet_kills_it_and_a_generator_gets_longer() -> None:
    for example, grace in (("cpu-digits", 30), ("cpu-smollm2", 90)):
        o = owner(example)
        pod = deployment.pod_template(o, deployment.Served("1", "bk-1", o.spec.model.name))["spec"]
        assert pod["terminationGracePeriodSeconds"] == grace
        (triton,) = [c for c in pod["containers"] if c["name"] == "triton"]
        assert f"--exit-timeout-secs={grace - deployment.EXIT_MARGIN_SECONDS}" in triton["args"]


def test_a_generator_scales_on_its_waiting_sequences_and_kv_cache_per_pod() -> None:
    base = owner("cpu-smollm2")
    scaling = types.Autoscaling.model_validate(
        {"maxReplicas": 3, "waitingSequences": {"average": 2}, "kvCache": {"averagePercent": 80}}
    )
    spec = base.spec.model_copy(update={"replicas": None, "autoscaling": scaling})
    rendered = hpa.render_hpa(dataclasses.replace(base, spec=spec))
    assert rendered is not None
    assert [(m["pods"]["metric"]["name"], m["pods"]["target"]) for m in rendered["spec"]["metrics"]] == [
        (name, {"type": "AverageValue", "averageValue": value})
        for name, value in (("conch_llm_waiting_sequences", "2"), ("conch_llm_kv_cache_percent", "80"))
    ]

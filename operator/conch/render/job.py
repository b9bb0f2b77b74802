"""The builder Job: runs `model-repo-builder build` for one version; reports via its termination message.

The source's byte cap (spec.build.maxSourceSize) goes to the builder as $CONCH_MAX_SOURCE_BYTES (the
default of its --max-source-bytes; an older builder image ignores it rather than refusing a flag), and the
scratch volume the builder works in (/tmp) gets a sizeLimit that follows from it (types.Build), so a
build that outgrows its disk is stopped by the kubelet instead of filling the node's.
"""

from __future__ import annotations

from conch.api import keys
from conch.render import common, oneshot
from conch.render.common import Obj, Owner
from model_repo_builder.sources import limits

CONTAINER = "builder"
EXIT_BAD_INPUT = 2
EXIT_GATE_FAILED = 3
DEADLINE_ENV = (
    "CONCH_BUILD_DEADLINE_SECONDS"  # model_repo_builder.cli: long steps (distillation) fit inside it
)


FAILURE_POLICY: Obj = {
    "rules": [
        {  # bad input and a failed gate are deterministic: retrying cannot help
            "action": "FailJob",
            "onExitCodes": {
                "containerName": CONTAINER,
                "operator": "In",
                "values": [EXIT_BAD_INPUT, EXIT_GATE_FAILED],
            },
        },
        {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]},
    ]
}


def source_argument(owner: Owner) -> str:
    """SOURCE for the builder: a path inside the mounted store, or the URL."""
    source = owner.spec.model.source
    if source.url is not None:
        return source.url
    return f"{common.STORE_MOUNT}/{(source.path or '').lstrip('/')}"


def command(owner: Owner) -> list[str]:
    """The builder command line (the builder's CLI contract)."""
    spec = owner.spec
    cmd = [
        "model-repo-builder", "build", source_argument(owner),
        "--out", common.repository_root(spec),
        "--recipe-json", keys.recipe_json(spec),
        "--model-name", spec.model.name,
        "--summary-file", oneshot.SUMMARY_FILE,
    ]  # fmt: skip
    if spec.model.source.sha256 is not None:
        cmd[-2:-2] = ["--sha256", spec.model.source.sha256]
    return cmd


def render_job(owner: Owner, version: str, spec_key: str) -> Obj:
    """The Job that builds `version` (whose spec key is `spec_key`)."""
    spec = owner.spec
    name = keys.job_name(owner.name, spec_key)
    pod_labels = {**common.labels(owner, "builder"), common.LABEL_VERSION: version}
    annotations = {common.ANNOTATION_SPEC_KEY: spec_key}
    container = oneshot.container(
        CONTAINER, spec.build.image, command(owner),
        spec.build.resources,
        [{"name": common.STORE_VOLUME, "mountPath": common.STORE_MOUNT}, oneshot.TMP_MOUNT],
        env=[
            {"name": DEADLINE_ENV, "value": str(spec.build.active_deadline_seconds)},
            {"name": limits.ENV, "value": str(spec.build.max_source_bytes())},
        ],
    )  # fmt: skip
    scratch = {**oneshot.TMP_VOLUME, "emptyDir": {"sizeLimit": spec.build.scratch_size()}}
    pod = oneshot.pod_spec(spec, container, [common.store_volume(owner, read_only=False), scratch])
    return oneshot.job(
        common.metadata(owner, name, "builder", annotations=annotations),
        {"labels": pod_labels, "annotations": annotations},
        pod,
        backoff_limit=spec.build.backoff_limit,
        deadline_seconds=spec.build.active_deadline_seconds,
        failure_policy=FAILURE_POLICY,
    )

"""spec.auth on the real apiserver (kwok pods): the generated token Secret is created once, owned, and
read back (a key a user adds for a rotation stays, the token is never replaced); status.auth names it;
the pods mount it and no token appears in the Deployment, status, Events or the operator's log. A
Secret of that name that the ModelDeployment does not own holds the Deployment back. With auth off
(the operator's default here) status says so and one AuthDisabled Warning Event is posted."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import pytest
from opharness import Kube, Operator, kube_fixture, md_object, run_operator, serving, wait_for  # noqa: F401

pytestmark = pytest.mark.cluster
RESYNC = 5.0


@pytest.fixture(scope="module", name="operator")
def fast_resync_operator(cluster: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Operator]:
    yield from run_operator(cluster, tmp_path_factory, "--resync-seconds", str(RESYNC))


def token_of(secret: dict[str, Any] | None, key: str = "token") -> str | None:
    value = ((secret or {}).get("data") or {}).get(key)
    return None if value is None else base64.b64decode(value).decode()


def events(k: Kube) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = json.loads(k.k("get", "events", "-o", "json").stdout)["items"]
    return items


def test_op_generates_the_token_secret_once_and_never_shows_the_token(kube: Kube, operator: Operator) -> None:
    k = kube
    k.apply(md_object("guarded", auth={"mode": "token"}))
    k.finish_build("guarded", "v1")
    wait_for("v1 serving", lambda: serving(k, "guarded", "v1"), 90)
    secret = k.get("secret", "guarded-inference-tokens")
    md = k.get("md", "guarded")
    assert secret is not None and md is not None
    token = token_of(secret)
    assert token is not None and len(token) >= 43
    refs = secret["metadata"]["ownerReferences"]
    assert [(r["kind"], r["uid"], r["controller"]) for r in refs] == [
        ("ModelDeployment", md["metadata"]["uid"], True)
    ]
    assert md["status"]["auth"] == {"mode": "token", "secretName": "guarded-inference-tokens"}
    dep = k.get("deployment", "guarded")
    assert dep is not None
    pod = dep["spec"]["template"]["spec"]
    assert [c["name"] for c in pod["containers"]] == ["triton", "auth-proxy"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["inference-tokens"]["secret"]["secretName"] == "guarded-inference-tokens"

    # a rotation on the generated Secret: a second key added by hand stays, the first is not replaced
    second = base64.b64encode(b"second-token-for-rotation").decode()
    k.k(
        "patch",
        "secret",
        "guarded-inference-tokens",
        "--type=merge",
        "-p",
        json.dumps({"data": {"next": second}}),
    )
    passes = operator.metric("conch_reconciles_total") or 0
    wait_for("two resync passes", lambda: (operator.metric("conch_reconciles_total") or 0) >= passes + 2, 30)
    kept = k.get("secret", "guarded-inference-tokens")
    assert token_of(kept) == token and token_of(kept, "next") == "second-token-for-rotation"

    shown = {
        "deployment": json.dumps(k.get("deployment", "guarded")),
        "modeldeployment": json.dumps(k.get("md", "guarded")),
        "events": json.dumps(events(k)),
        "operator log": "\n".join(p.read_text(errors="replace") for p in operator.log_dir.glob("*.log")),
    }
    for name, text in shown.items():
        assert token not in text, f"the token shows in the {name}"


def test_op_never_mounts_a_token_secret_it_does_not_own(kube: Kube, operator: Operator) -> None:
    k = kube
    theirs = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "held-inference-tokens"},
              "data": {"token": base64.b64encode(b"theirs").decode()}}  # fmt: skip
    k.k("apply", "-f", "-", input=json.dumps(theirs))
    k.apply(md_object("held", auth={"mode": "token"}))
    k.finish_build("held", "v1")

    def conflicted() -> dict[str, Any] | None:
        degraded = k.condition("held", "Degraded")
        return degraded if degraded.get("reason") == "OwnershipConflict" else None

    degraded = wait_for("Degraded OwnershipConflict", conflicted, 60)
    assert "inference-token Secret" in degraded["message"] or "held-inference-tokens" in degraded["message"]
    assert k.get("deployment", "held") is None
    assert token_of(k.get("secret", "held-inference-tokens")) == "theirs"


def test_op_says_loudly_when_inference_is_open(kube: Kube, operator: Operator) -> None:
    k = kube
    k.apply(md_object("open"))  # no spec.auth: the operator's default here is none
    wait_for("status.auth", lambda: k.status("open").get("auth"), 60)
    auth = k.status("open")["auth"]
    assert auth["mode"] == "none" and "NOT authenticated" in auth["message"]
    warned = wait_for(
        "an AuthDisabled Warning Event",
        lambda: [e for e in events(k) if e.get("reason") == "AuthDisabled" and e.get("type") == "Warning"],
        30,
    )
    assert len(warned) == 1

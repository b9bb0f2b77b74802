"""The token set and what counts as a presented token or an open path, without a server."""

from __future__ import annotations

from pathlib import Path

import pytest

from conch_gateway import authproxy, tokens

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ([("Authorization", "Bearer abc")], "abc"),
        ([("authorization", "bearer  abc ")], "abc"),
        ([("conch-api-key", "k")], "k"),
        ([("Conch-Api-Key", "k"), ("Authorization", "Bearer b")], "b"),  # Bearer wins
        ([("Authorization", "Basic abc")], None),  # another scheme is no token
        ([("Authorization", "Bearer ")], None),
        ([("conch-api-key", "  ")], None),
        ([("x-api-key", "k")], None),
        ([], None),
    ],
)  # fmt: skip
def test_presented(headers: list[tuple[str, str]], expected: str | None) -> None:
    assert tokens.presented(headers) == expected


def test_every_non_dot_file_is_a_token_and_a_refresh_sees_changes(tmp_path: Path) -> None:
    (tmp_path / "a").write_text("one\n")
    (tmp_path / "..data").mkdir()  # what a kubelet's Secret volume holds beside the keys
    (tmp_path / ".b").write_text("hidden")
    (tmp_path / "empty").write_text("\n")
    tokenset = tokens.TokenSet(tmp_path)
    assert len(tokenset) == 1
    assert tokenset.check("one") is None
    assert tokenset.check("hidden") == tokens.INVALID
    assert tokenset.check(None) == tokens.MISSING
    assert tokenset.check("") == tokens.INVALID
    assert tokenset.refresh() is False
    (tmp_path / "b").write_text("two")
    assert tokenset.refresh() is True and tokenset.check("two") is None and tokenset.check("one") is None
    (tmp_path / "a").unlink()
    assert tokenset.refresh() is True and tokenset.check("one") == tokens.INVALID


def test_a_missing_directory_accepts_nothing(tmp_path: Path) -> None:
    tokenset = tokens.TokenSet(tmp_path / "absent")
    assert len(tokenset) == 0 and tokenset.check("anything") == tokens.INVALID


@pytest.mark.parametrize(
    ("path", "open_"),
    [
        ("/v2/health/live", True),
        ("/v2/health/ready", True),
        ("/v2/models/m/ready", True),
        ("/v2/models/m/versions/3/ready", True),
        ("/health/ready", True),
        ("/health/live", True),
        ("/v2/models/m/infer", False),
        ("/v2/models/m", False),
        ("/v2/models/m/ready/x", False),
        ("/v2/models/a/b/ready", False),
        ("/v2", False),
        ("/v1/chat/completions", False),
        ("/metrics", False),
    ],
)  # fmt: skip
def test_open_paths_are_the_probes_only(path: str, open_: bool) -> None:
    assert (authproxy.OPEN_PATH.fullmatch(path) is not None) is open_


def test_a_route_names_its_flag_when_malformed() -> None:
    assert authproxy.Route.parse("http", "8000=127.0.0.1:18000") == authproxy.Route(
        "http", 8000, "127.0.0.1:18000"
    )
    with pytest.raises(Exception, match="--grpc: expected PORT=HOST:PORT"):
        authproxy.Route.parse("grpc", "127.0.0.1:18001")

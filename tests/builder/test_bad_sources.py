"""Malicious and malformed sources: each is refused as bad-input naming the file, nothing lands outside
the build's work directory, and the store (with the repository already served from it) is unchanged.

The work directory is a TemporaryDirectory under `tempfile.tempdir`; the tests point that at a fresh
`scratch` folder, so "nothing outside the work directory" is checkable: after the build `scratch`
is empty again (the work directory went) and no path an archive aimed at exists.
"""

from __future__ import annotations

import http.server
import io
import json
import shutil
import tarfile
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from model_repo_builder.errors import BadInput
from model_repo_builder.recipe import Text
from model_repo_builder.sources import causal, limits
from model_repo_builder.sources.archive import unpack_tar_gz
from model_repo_builder.sources.limits import SourceLimits

from .conftest import CliResult, Run, listing

pytestmark = pytest.mark.unit
RECIPE = json.dumps(
    {
        "triton": {"instanceKind": "KIND_CPU"},
        "export": {"backend": "python"},
        "text": {"task": "text-classification"},
    }
)
MIB = 1 << 20


@dataclass(frozen=True)
class Where:
    """A test's folders: `tmp` (its own), `store` and `scratch` (the work directory's parent)."""

    tmp: Path
    store: Path
    scratch: Path


@pytest.fixture
def where(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Where:
    """A store that already holds a served repository (whose files must stay as they are), and the
    scratch folder the build's work directory is made in."""
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    served = tmp_path / "store" / "0123abcd" / "model" / "1"
    served.mkdir(parents=True)
    (served / "model.onnx").write_bytes(b"served bytes")
    return Where(tmp_path, tmp_path / "store", scratch)


def _refused(r: CliResult, words: list[str], where: Where) -> None:
    store, scratch = where.store, where.scratch
    assert r.code == 2, r.stderr
    assert r.summary["error"]["kind"] == "bad-input", r.summary
    message = r.summary["error"]["message"]
    for word in words:
        assert word in message, message
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: bad-input: {message}"], r.stderr
    assert listing(store) == ["0123abcd", "0123abcd/model", "0123abcd/model/1", "0123abcd/model/1/model.onnx"]
    assert (store / "0123abcd/model/1/model.onnx").read_bytes() == b"served bytes"
    assert listing(scratch) == [], "the work directory (or something beside it) was left behind"


def _archive(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]]) -> Path:
    """A .tar.gz with a harmless config.json first, then `members` as given (names unchecked)."""
    with tarfile.open(path, "w:gz") as tar:
        config = b"{}"
        info = tarfile.TarInfo("model/config.json")
        info.size = len(config)
        tar.addfile(info, io.BytesIO(config))
        for member, data in members:
            tar.addfile(member, None if data is None else io.BytesIO(data))
    return path


def _file(name: str, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def _link(name: str, kind: bytes, target: str) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info, None


def test_a_traversal_member_is_refused_and_nothing_is_written_outside(run_cli: Run, where: Where) -> None:
    # from <work>/unpacked, ../../ is `scratch` itself: the parent of the work directory
    archive = _archive(where.tmp / "evil.tar.gz", [_file("../../escape.txt", b"pwned")])
    r = run_cli("build", archive, "--out", where.store, "--recipe-json", RECIPE)
    _refused(r, ["evil.tar.gz", "'../../escape.txt'", "outside"], where)
    absolute = where.tmp / "absolute.txt"
    archive = _archive(where.tmp / "abs.tar.gz", [_file(str(absolute), b"pwned")])
    r = run_cli("build", archive, "--out", where.store, "--recipe-json", RECIPE)
    _refused(r, ["abs.tar.gz", str(absolute).lstrip("/"), "outside"], where)
    assert not absolute.exists()


@pytest.mark.parametrize(
    ("kind", "words"), [(tarfile.SYMTYPE, "a symbolic link"), (tarfile.LNKTYPE, "a hard link")]
)
def test_a_link_member_is_refused_before_a_later_member_can_write_through_it(
    run_cli: Run, where: Where, kind: bytes, words: str
) -> None:
    victim = where.tmp / "victim"
    victim.mkdir()
    members = [_link("model/out", kind, str(victim)), _file("model/out/pwned", b"pwned")]
    archive = _archive(where.tmp / "links.tar.gz", members)
    r = run_cli("build", archive, "--out", where.store, "--recipe-json", RECIPE)
    _refused(r, ["links.tar.gz", "'model/out'", words], where)
    assert list(victim.iterdir()) == []


def test_devices_and_fifos_are_refused(tmp_path: Path) -> None:
    for kind, words in ((tarfile.FIFOTYPE, "a fifo"), (tarfile.CHRTYPE, "a character device")):
        archive = _archive(tmp_path / "special.tar.gz", [_link("model/dev", kind, "")])
        with pytest.raises(BadInput, match=f"special.tar.gz: member 'model/dev' is {words}"):
            unpack_tar_gz(archive, tmp_path / f"out-{kind.decode()}", SourceLimits())


def _bomb(path: Path, size: int) -> Path:
    """A .tar.gz of one `size`-byte file of zeros: a few KiB on disk per MiB inside."""
    with tarfile.open(path, "w:gz") as tar:
        info = tarfile.TarInfo("model/zeros.bin")
        info.size = size
        tar.addfile(info, _Zeros(size))
    return path


class _Zeros(io.RawIOBase):
    def __init__(self, size: int) -> None:
        self.left = size

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        n = min(len(buffer), self.left)
        buffer[:n] = bytes(n)
        self.left -= n
        return n

    def readable(self) -> bool:
        return True


def test_a_decompression_bomb_is_refused_before_it_inflates(
    run_cli: Run, where: Where, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive = _bomb(where.tmp / "bomb.tar.gz", 16 * MIB)
    assert archive.stat().st_size < 64 * 1024
    words = ["bomb.tar.gz", "'model/zeros.bin'", "over the source size limit", "16777216 > 1048576"]
    r = run_cli("build", archive, "--out", where.store, "--recipe-json", RECIPE, limits.FLAG, MIB)
    _refused(r, words, where)
    monkeypatch.setenv(limits.ENV, str(MIB))  # how the operator's build Job passes maxSourceSize
    _refused(run_cli("build", archive, "--out", where.store, "--recipe-json", RECIPE), words, where)


def test_an_archive_of_too_many_members_is_refused(tmp_path: Path) -> None:
    archive = _archive(tmp_path / "many.tar.gz", [_file(f"model/f{i}", b"x") for i in range(5)])
    with pytest.raises(BadInput, match=r"many.tar.gz: more than 3 members \(at 'model/f2'\)"):
        unpack_tar_gz(archive, tmp_path / "out", SourceLimits(max_members=3))
    over = r"many.tar.gz unpacked \(at member 'model/f4'\) is over the source size limit: 7 > 6 bytes"
    with pytest.raises(BadInput, match=over):  # config.json's 2 bytes and 5 of 1 byte
        unpack_tar_gz(archive, tmp_path / "over", SourceLimits(max_bytes=6))
    unpack_tar_gz(archive, tmp_path / "fits", SourceLimits(max_bytes=7, max_members=6))
    assert listing(tmp_path / "fits" / "model") == ["config.json", "f0", "f1", "f2", "f3", "f4"]


class _Endless(http.server.BaseHTTPRequestHandler):
    """Sends 8 MiB of zeros without a Content-Length (the body ends when the connection closes)."""

    def do_GET(self) -> None:
        self.send_response(200)
        self.end_headers()
        try:
            for _ in range(8):
                self.wfile.write(bytes(MIB))
        except (BrokenPipeError, ConnectionResetError):
            pass  # the builder stopped reading at its cap

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def endless_url() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Endless)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/model.onnx"
    server.shutdown()
    server.server_close()


def test_a_download_over_the_cap_is_stopped(
    run_cli: Run, where: Where, http_root: tuple[str, Path], endless_url: str
) -> None:
    base, root = http_root
    (root / "big.onnx").write_bytes(bytes(2 * MIB))  # announced by its Content-Length
    r = run_cli("build", f"{base}/big.onnx", "--out", where.store, "--sha256", "0" * 64, limits.FLAG, MIB)
    _refused(r, [f"download {base}/big.onnx", "Content-Length 2097152 > 1048576"], where)
    r = run_cli("build", endless_url, "--out", where.store, "--sha256", "0" * 64, limits.FLAG, MIB)
    _refused(r, [f"download {endless_url}", "over the source size limit: at least"], where)


def _safetensors_cases() -> list[tuple[str, str]]:
    return [
        ("truncated", "past the file's"),
        ("bad-json", "header is not valid JSON"),
        ("long-header", "beyond"),
    ]


def _damage(path: Path, how: str) -> None:
    data = path.read_bytes()
    if how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif how == "bad-json":
        length = int.from_bytes(data[:8], "little")
        path.write_bytes(data[:8] + b"{" * length + data[8 + length :])
    else:
        path.write_bytes((1 << 40).to_bytes(8, "little") + data[8:64])


@pytest.mark.parametrize(("how", "words"), _safetensors_cases())
def test_corrupt_safetensors_is_refused_naming_the_file(
    run_cli: Run, sentiment_checkpoint: Path, where: Where, how: str, words: str
) -> None:
    source = shutil.copytree(sentiment_checkpoint, where.tmp / "ckpt")
    _damage(source / "model.safetensors", how)
    r = run_cli("build", source, "--out", where.store, "--recipe-json", RECIPE)
    _refused(r, ["ckpt/model.safetensors", words], where)


TOKENIZERS = [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "not a JSON object"),
    ('{"model": 5}', "can load: data did not match"),
]


@pytest.mark.parametrize(("text", "words"), TOKENIZERS)
def test_a_malformed_tokenizer_json_is_refused_naming_the_file(
    run_cli: Run,
    sentiment_checkpoint: Path,
    where: Where,
    text: str,
    words: str,
) -> None:
    source = shutil.copytree(sentiment_checkpoint, where.tmp / "ckpt")
    (source / "tokenizer.json").write_text(text)
    r = run_cli("build", source, "--out", where.store, "--recipe-json", RECIPE)
    _refused(r, ["ckpt/tokenizer.json", words], where)


def test_a_causal_lm_with_a_malformed_tokenizer_json_is_refused(tmp_path: Path) -> None:
    hf = tmp_path / "llm"
    hf.mkdir()
    llama = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "max_position_embeddings": 64}
    (hf / "config.json").write_text(json.dumps(llama))
    (hf / "tokenizer.json").write_text('{"model": 5}')
    with pytest.raises(BadInput, match=r"llm/tokenizer\.json: not a tokenizer `tokenizers` can load"):
        causal.load(hf, Text(task="text-generation"), tmp_path / "w")

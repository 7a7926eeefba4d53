"""The commands: keel ingest | kb list | kb delete-doc | search, and provider embeddings from keel.yaml."""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from keel.cli import main
from keel.knowledge.testing import HashEmbedder, write_pdf


@pytest.fixture
def keel(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Callable[..., tuple[int, str, str]]:
    """Run the real entry point (errors become one line and an exit code there): (code, stdout, stderr)."""

    def run(*args: str) -> tuple[int, str, str]:
        monkeypatch.setattr(sys, "argv", ["keel", *args])
        try:
            main()
            code = 0
        except SystemExit as exc:
            code = int(exc.code or 0)
        out, err = capsys.readouterr()
        return code, out, err

    return run


@pytest.fixture
def docs(tmp_path: Path) -> Path:
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "faq.md").write_text("# FAQ\n\nShipping takes three to five working days within the EU.\n")
    write_pdf(folder / "guide.pdf", ["Cover page.", "To return an item, print the label from your account "
                                     "and drop the parcel at any post office within 30 days."], title="Guide")
    return folder


def test_ingest_search_list_delete(docs: Path, keel: Callable[..., tuple[int, str, str]]) -> None:
    code, out, _ = keel("ingest", str(docs))
    assert code == 0 and "2 documents stored (0 unchanged), 2 pages, 3 chunks" in out

    code, out, _ = keel("search", "how can I send a product back", "--k", "2", "--json")
    hits = json.loads(out)
    assert code == 0 and [(h["title"], h["page"]) for h in hits][0] == ("Guide", 2)
    assert set(hits[0]) == {"id", "title", "uri", "page", "score", "text", "doc_id", "position", "heading"}

    code, out, _ = keel("search", "delivery time", "-k", "1")
    assert code == 0 and "1. FAQ" in out and "Shipping takes three to five" in out

    code, out, _ = keel("kb", "list", "--json")
    assert json.loads(out) == [{"kb": "default", "documents": 2, "chunks": 3, "pages": 2}]
    code, out, _ = keel("kb", "list", "--kb", "default", "--json")
    rows = json.loads(out)
    pdf_id = next(r["doc_id"] for r in rows if r["title"] == "Guide")

    code, out, _ = keel("kb", "delete-doc", pdf_id[:8], "--json")
    assert code == 0 and json.loads(out) == {"deleted": [pdf_id]}
    code, out, _ = keel("search", "return label post office", "--json")
    assert all(h["title"] != "Guide" for h in json.loads(out))

    code, out, err = keel("kb", "delete-doc", "no-such-doc")
    assert code == 2 and "no document 'no-such-doc'" in err


def test_ingest_exit_code_says_some_files_failed(docs: Path, keel: Callable[..., tuple[int, str, str]]) -> None:
    (docs / "scan.pdf").write_bytes(b"%PDF-1.4 broken")
    (docs / "data.bin").write_bytes(b"\x00\x01")
    code, out, err = keel("ingest", str(docs), "--json")
    report = json.loads(out)
    assert code == 2 and report["documents"] == 2 and report["ok"] is False
    assert sorted(Path(f["path"]).name for f in report["failed"]) == ["data.bin", "scan.pdf"]
    code, out, err = keel("ingest", str(docs))
    assert code == 2 and "skipped" in err and "scan.pdf: not a readable PDF" in err
    assert "0 documents stored (2 unchanged)" in out and "2 files failed" in out


def test_usage_errors(keel: Callable[..., tuple[int, str, str]]) -> None:
    code, _, err = keel("ingest")
    assert code == 2 and "nothing to ingest" in err
    code, _, err = keel("search", "x", "--mode", "psychic")
    assert code == 2 and "unknown --mode" in err
    code, out, _ = keel("search", "anything")
    assert code == 0 and "no results" in out


class _Embeddings(BaseHTTPRequestHandler):
    """A local OpenAI-compatible /embeddings endpoint, answering with hash vectors."""

    fake = HashEmbedder(dim=64)
    seen_auth: list[str] = []

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.seen_auth.append(self.headers.get("Authorization", ""))
        data = [{"index": i, "embedding": self.fake.embed_query(t).tolist()} for i, t in enumerate(body["input"])]
        payload = json.dumps({"data": data, "model": body["model"]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def embeddings_server() -> Iterator[str]:
    server = HTTPServer(("127.0.0.1", 0), _Embeddings)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


def test_demo_with_provider_embeddings_from_keel_yaml(tmp_path: Path, embeddings_server: str,
                                                      monkeypatch: pytest.MonkeyPatch,
                                                      keel: Callable[..., tuple[int, str, str]]) -> None:
    (tmp_path / "keel.yaml").write_text(
        "knowledge:\n  embeddings:\n    provider: openai\n    model: test-embed\n"
        f"    base_url: {embeddings_server}\n    api_key_env: TEST_EMBED_KEY\n")
    code, _, err = keel("ingest", "--demo", "--kb", "python")
    assert code == 2 and "TEST_EMBED_KEY" in err  # the key is named but not set: said so, nothing half-done

    monkeypatch.setenv("TEST_EMBED_KEY", "sk-local")
    code, out, _ = keel("ingest", "--demo", "--kb", "python", "--json")
    report = json.loads(out)
    assert code == 0 and report["documents"] == 79 and report["chunks"] > 200
    assert set(_Embeddings.seen_auth) == {"Bearer sk-local"}
    code, out, _ = keel("search", "assert statement debugging", "--kb", "python", "--json", "-k", "3")
    assert any(h["uri"] == "pydoc:assert" and h["title"] == 'The "assert" statement' for h in json.loads(out))

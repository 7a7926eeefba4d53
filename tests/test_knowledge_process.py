"""Real processes: a second process gets StoreLocked at once; kill -9 mid-ingest leaves a consistent store."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from keel.config import KnowledgeSettings
from keel.errors import StoreLocked
from keel.knowledge import KnowledgeBase
from keel.knowledge.testing import HashEmbedder

from .chroma_fixtures import chroma_server

# Ingests the folder with a deliberately slow fake embedder, so the parent can kill it mid-way.
_INGEST = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from keel.config import KnowledgeSettings
    from keel.knowledge import KnowledgeBase
    from keel.knowledge.testing import HashEmbedder

    class Slow(HashEmbedder):
        def embed_windows(self, texts):
            time.sleep(0.05)
            return super().embed_windows(texts)

    kb = KnowledgeBase(KnowledgeSettings(chunk_tokens=60, chunk_overlap=10), Path(sys.argv[1]), embedder=Slow())
    print("ready", flush=True)
    report = kb.ingest([Path(sys.argv[2])])
    print("finished", report.documents, flush=True)
""")

_HOLD = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from keel.config import KnowledgeSettings
    from keel.knowledge import KnowledgeBase
    from keel.knowledge.testing import HashEmbedder
    kb = KnowledgeBase(KnowledgeSettings(), Path(sys.argv[1]), embedder=HashEmbedder())
    print("holding", flush=True)
    time.sleep(60)
""")


def _env() -> dict[str, str]:
    src = str(Path(__file__).resolve().parents[1] / "src")
    return {**os.environ, "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", "")}


def _write_docs(folder: Path, n: int, version: str = "v1") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        body = " ".join(f"Topic {i} sentence {j} about item{i} and {version} details." for j in range(20))
        (folder / f"doc{i:03d}.md").write_text(f"# Document {i}\n\n{body}\n")


def _documents(home: Path) -> int:
    db = home / "kb" / "catalog.sqlite3"
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(db, timeout=1) as con:
            return int(con.execute("SELECT COUNT(*) FROM documents").fetchone()[0])
    except sqlite3.OperationalError:
        return 0


def _consistent(kb: KnowledgeBase) -> tuple[set[str], set[str]]:
    col = kb.vectors._collection(kb._collection("default"))
    owners = {rid.rsplit(":", 1)[0] for rid in col.get(include=[])["ids"]}
    chunks = {r[0] for r in kb.catalog._db.execute("SELECT id FROM chunks")}
    return owners, chunks


def test_second_process_gets_store_locked_not_a_hang(tmp_path: Path) -> None:
    home = tmp_path / "home"
    holder = subprocess.Popen([sys.executable, "-c", _HOLD, str(home)], stdout=subprocess.PIPE, text=True,
                              env=_env())
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "holding"
        start = time.monotonic()
        with pytest.raises(StoreLocked, match=rf"another process \(pid {holder.pid}\) has the knowledge base") as err:
            KnowledgeBase(KnowledgeSettings(), home, embedder=HashEmbedder())
        assert time.monotonic() - start < 2
        assert "server" in (err.value.hint or "") and err.value.exit_code == 6
    finally:
        holder.kill()
        holder.wait()
    # the lock dies with its process: the store opens now
    KnowledgeBase(KnowledgeSettings(), home, embedder=HashEmbedder()).close()


def test_same_process_shares_the_lock(tmp_path: Path) -> None:
    a = KnowledgeBase(KnowledgeSettings(), tmp_path / "home", embedder=HashEmbedder())
    b = KnowledgeBase(KnowledgeSettings(), tmp_path / "home", embedder=HashEmbedder())  # no StoreLocked
    assert a.list_kbs() == b.list_kbs()
    b.close()
    assert a.list_kbs() == []  # closing one handle leaves the other usable
    a.close()


@pytest.mark.timeout(180)
def test_kill_9_during_ingest_then_next_run_completes(tmp_path: Path) -> None:
    home, docs = tmp_path / "home", tmp_path / "docs"
    _write_docs(docs, 12, "v1")
    first = KnowledgeBase(KnowledgeSettings(chunk_tokens=60, chunk_overlap=10), home, embedder=HashEmbedder())
    first.ingest([docs])
    first.close()
    _write_docs(docs, 60, "v2")  # 12 changed documents and 48 new ones

    proc = subprocess.Popen([sys.executable, "-c", _INGEST, str(home), str(docs)], stdout=subprocess.PIPE,
                            text=True, env=_env())
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    deadline = time.monotonic() + 120
    while _documents(home) < 20 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    done = _documents(home)
    assert 12 <= done < 60, f"the kill should land mid-way, {done} documents were stored"

    kb = KnowledgeBase(KnowledgeSettings(chunk_tokens=60, chunk_overlap=10), home, embedder=HashEmbedder())
    owners, chunks = _consistent(kb)
    assert chunks <= owners  # every searchable chunk has its vectors, even right after the kill
    report = kb.ingest([docs])
    assert report.documents + report.unchanged == 60 and report.documents >= 60 - done
    owners, chunks = _consistent(kb)
    assert owners == chunks  # leftovers of the killed run are gone
    assert len(kb.documents()) == 60 and kb.catalog.pending("default") == []
    hit = kb.search("item7 v2 details", k=1, mode="keyword")[0]
    assert hit.title == "Document 7" and "v2" in hit.text
    kb.close()


@pytest.mark.timeout(120)
def test_server_mode_lets_two_processes_share_the_store(tmp_path: Path) -> None:
    with chroma_server(tmp_path / "chroma") as port:
        settings = KnowledgeSettings(store="server", server_host="127.0.0.1", server_port=port,
                                     chunk_tokens=60, chunk_overlap=10)
        _write_docs(tmp_path / "docs", 3)
        writer = KnowledgeBase(settings, tmp_path / "home", embedder=HashEmbedder())
        # a second keel process on the same data dir: no StoreLocked in server mode
        reader_script = _HOLD.replace("KnowledgeSettings()", f"KnowledgeSettings(store='server', "
                                      f"server_host='127.0.0.1', server_port={port})")
        other = subprocess.run([sys.executable, "-c", reader_script.replace("time.sleep(60)", ""),
                                str(tmp_path / "home")], capture_output=True, text=True, env=_env(), timeout=60)
        assert other.returncode == 0 and other.stdout.strip() == "holding", other.stderr[-500:]
        assert writer.ingest([tmp_path / "docs"]).documents == 3
        reader = KnowledgeBase(settings, tmp_path / "home", embedder=HashEmbedder())
        hit = reader.search("item2 details", k=1)[0]
        assert hit.title == "Document 2" and hit.metadata["vector_rank"] >= 1
        reader.close()
        writer.close()

"""The web UI at / in a real browser: Debian's chromium driven by Playwright, against a real
``keel serve`` subprocess answering with the scripted ``fake`` model over a small ingested KB.

The page is static (src/keel/server/ui/); everything it shows comes from the HTTP API, so these
tests cover the page and the API contract it relies on together.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

pytest.importorskip("playwright.sync_api")
from playwright.sync_api import Browser, Page, expect, sync_playwright  # noqa: E402

from .server_fixtures import wait_healthy

CHROMIUM = shutil.which("chromium")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (apt-get install chromium)")

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]

#: markup the scripted model "writes": it must show as text and never run
HOSTILE = '<script>window.__keel_pwned = 1</script><img src="x" onerror="window.__keel_pwned = 2">'
REPLY = f"Pelican Point lighthouse was built in 1872 by the harbour board. {HOSTILE}"

CONFIG = f"""\
models:
  scripted:
    provider: fake
    replies: {json.dumps([REPLY])}
roles:
  chat: [scripted]
  fast: [scripted]
router:
  judge: false
gateway:
  cache:
    enabled: false
"""

DOCS = {
    "lighthouse.txt": "Pelican Point lighthouse was built in 1872 by the harbour board. "
                      "Its lamp can be seen for twenty nautical miles on a clear night.\n",
    "markup.txt": f"Pelican Point lighthouse web page notes: the page once showed the markup {HOSTILE} "
                  "which a browser must display as text.\n",
}
SCREENSHOT_DIR = Path(os.environ.get("KEEL_UI_SCREENSHOTS", "/tmp"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def _serving(root: Path, env: dict[str, str]) -> Iterator[str]:
    """``keel serve`` on a free loopback port in ``root``; yields its base URL once /healthz answers."""
    keel = str(Path(sys.executable).with_name("keel"))
    port = _free_port()
    log_path = root / "serve.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen([keel, "serve", "--port", str(port)], cwd=root, env=env, stdout=log,
                                stderr=subprocess.STDOUT)
        base = f"http://127.0.0.1:{port}"
        try:
            wait_healthy(base, proc, timeout_s=120, output=log_path.read_text)
            yield base
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _keel(root: Path, env: dict[str, str], *args: str) -> str:
    done = subprocess.run([str(Path(sys.executable).with_name("keel")), *args], cwd=root, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout


def _setup(root: Path) -> dict[str, str]:
    (root / "keel.yaml").write_text(CONFIG)
    (root / "ws").mkdir()
    env = {**os.environ, "KEEL_HOME": str(root / "home"), "KEEL_WORKSPACE": str(root / "ws"), "USER": "tester"}
    env.pop("KEEL_CONFIG", None)
    return env


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """keel serve on a free loopback port (auth off: loopback, no keys) over an ingested two-file KB."""
    root = tmp_path_factory.mktemp("webui")
    env = _setup(root)
    (root / "docs").mkdir()
    for name, text in DOCS.items():
        (root / "docs" / name).write_text(text)
    _keel(root, env, "ingest", "docs", "--json")
    with _serving(root, env) as base:
        yield {"base": base, "root": root, "env": env, "workspace": root / "ws"}


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser: Browser, server: dict[str, Any]) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1360, "height": 1000})
    page = context.new_page()
    # every request the page makes must go to keel itself: no CDN, no font, no analytics
    outside: list[str] = []
    page.on("request", lambda r: None if r.url.startswith((server["base"], "data:")) else outside.append(r.url))
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(server["base"] + "/")
    yield page
    assert outside == [], f"the page reached outside keel: {outside}"
    assert errors == [], f"JavaScript errors: {errors}"
    context.close()


def ask(page: Page, question: str, *, kb: str = "", session: str = "") -> None:
    page.get_by_label("Question", exact=True).fill(question)
    page.get_by_label("Knowledge base", exact=True).fill(kb)
    page.get_by_label("Session", exact=True).fill(session)
    page.get_by_role("button", name="Ask", exact=True).click()


def test_ask_shows_answer_sources_facts_and_feedback_lands(page: Page, server: dict[str, Any]) -> None:
    ask(page, "When was Pelican Point lighthouse built?", kb="default", session="ui-s1")
    answer = page.locator("#answer")
    expect(answer).to_be_visible(timeout=60_000)
    expect(page.locator("#answer-text")).to_contain_text("1872")
    expect(page.locator("#answer-status")).to_have_text("answered")

    # numbered sources with title, uri, score and the quoted text
    sources = page.locator("#sources > li")
    expect(sources.first).to_be_visible()
    n = sources.count()
    assert n >= 1
    titles = [sources.nth(i).locator(".source-title").inner_text() for i in range(n)]
    assert titles[0].startswith("[1]") and any("lighthouse" in t for t in titles)
    assert any("1872" in (sources.nth(i).locator("blockquote").text_content() or "") for i in range(n))
    expect(sources.first.locator(".score")).to_have_text(re.compile(r"score \d\.\d{3}"))
    expect(sources.first.locator(".source-meta")).to_contain_text(".txt")

    # route, guardrail, usage and the trace id the API returned
    facts = page.locator("#facts")
    expect(facts).to_contain_text("Route")
    expect(facts).to_contain_text("groundedness")
    trace_id = page.locator("#trace-id").inner_text()
    assert len(trace_id) == 32 and int(trace_id, 16) >= 0

    page.get_by_label("Comment (optional)").fill("clear and cited")
    page.get_by_role("button", name="Thumbs up: useful").click()
    expect(page.locator("#feedback-state")).to_contain_text("feedback recorded (up)")
    expect(page.get_by_role("button", name="Thumbs up: useful")).to_have_attribute("aria-pressed", "true")

    votes = _votes(server)
    assert [(v["trace_id"], v["rating"], v["comment"]) for v in votes] == [(trace_id, "up", "clear and cited")]

    # the up-vote waits in the side panel's few-shot candidates; accepting it makes it an example
    candidate = page.locator(f'#curation [data-curation-id="{votes[0]["curation_id"]}"]')
    expect(candidate).to_contain_text("When was Pelican Point lighthouse built?")
    page.locator("#curation-box").screenshot(path=str(SCREENSHOT_DIR / "keel-ui-curation.png"))
    candidate.get_by_role("button", name=f'Accept candidate {votes[0]["curation_id"]}').click()
    expect(page.locator("#curation")).to_contain_text("None waiting.")
    assert [e["id"] for e in _few_shot(server)] == [votes[0]["curation_id"]]

    # the trace is listed in the side panel and opens as a span tree
    page.get_by_role("button", name="Show trace").click()
    tree = page.locator("#span-tree")
    expect(tree.locator("[role=treeitem]").first).to_be_visible()
    expect(page.locator("#trace-id-shown")).to_have_text(trace_id)
    assert tree.locator("[role=treeitem]").count() >= 3
    expect(page.locator(f'#traces [data-trace-id="{trace_id}"]')).to_be_visible()
    page.screenshot(path=str(SCREENSHOT_DIR / "keel-ui-answer.png"), full_page=True)


def _feedback_store(server: dict[str, Any], expression: str) -> Any:
    """``expression`` over keel's feedback store (``fb``), evaluated by a separate process through
    keel's own API, as JSON."""
    code = f"import json; from keel import App; fb = App().telemetry.feedback; print(json.dumps({expression}))"
    done = subprocess.run([sys.executable, "-c", code], cwd=server["root"], env=server["env"], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def _votes(server: dict[str, Any]) -> list[dict[str, Any]]:
    return _feedback_store(server, "[v.to_dict() for v in fb.votes()]")  # type: ignore[no-any-return]


def _few_shot(server: dict[str, Any]) -> list[dict[str, Any]]:
    """The accepted examples the answer prompts read."""
    return _feedback_store(server, "fb.few_shot_examples()")  # type: ignore[no-any-return]


def test_model_and_source_markup_is_shown_as_text_never_run(page: Page) -> None:
    ask(page, "What markup did the Pelican Point lighthouse web page show?")
    expect(page.locator("#answer")).to_be_visible(timeout=60_000)
    expect(page.locator("#answer-status")).not_to_have_text("")
    shown = page.locator("#answer").text_content() or ""
    assert "<script>window.__keel_pwned = 1</script>" in shown
    assert page.locator("#answer script, #answer img").count() == 0
    page.wait_for_timeout(300)  # an onerror handler would have fired by now
    assert page.evaluate("window.__keel_pwned") is None


def test_risky_tool_waits_for_approval_and_the_card_approves_it(page: Page, server: dict[str, Any]) -> None:
    notes = server["workspace"] / "notes.txt"
    notes.write_text("my notes")
    ask(page, "delete notes.txt in the workspace")
    card = page.locator("#approval")
    expect(card).to_be_visible(timeout=60_000)
    expect(page.locator("#answer-status")).to_have_text("pending approval")
    expect(page.locator("#approval-tool")).to_have_text("delete_file")
    assert json.loads(page.locator("#approval-args").inner_text()) == {"path": "notes.txt"}
    approval_id = page.locator("#approval-id").inner_text()
    expect(page.locator("#feedback")).to_be_hidden()  # nothing to rate until the run finishes
    # the side panel lists it as pending too
    expect(page.locator("#approvals")).to_contain_text("delete_file")
    assert notes.exists()
    page.screenshot(path=str(SCREENSHOT_DIR / "keel-ui-approval.png"), full_page=True)

    card.get_by_role("button", name="Approve").click()
    expect(page.locator("#answer-status")).to_have_text("answered", timeout=60_000)
    expect(card).to_be_hidden()
    expect(page.locator("#feedback")).to_be_visible()
    assert not notes.exists()
    decided = httpx.get(f"{server['base']}/v1/approvals/{approval_id}", timeout=10).json()
    assert decided["status"] in ("approved", "used") and decided["tool"] == "delete_file"


def test_rejecting_leaves_the_file(page: Page, server: dict[str, Any]) -> None:
    notes = server["workspace"] / "keep.txt"
    notes.write_text("keep me")
    ask(page, "delete keep.txt in the workspace")
    card = page.locator("#approval")
    expect(card).to_be_visible(timeout=60_000)
    page.get_by_label("Reason (for a rejection)").fill("not today")
    card.get_by_role("button", name="Reject").click()
    expect(page.locator("#answer-status")).to_have_text("answered", timeout=60_000)
    expect(page.locator("#answer-text")).to_contain_text("rejected")
    assert notes.read_text() == "keep me"


def test_errors_show_code_message_and_hint(page: Page) -> None:
    # an empty question never leaves the page: the browser's own required-field check stops it
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url) if r.url.endswith("/v1/ask") else None)
    page.get_by_role("button", name="Ask", exact=True).click()
    assert page.get_by_label("Question", exact=True).evaluate("(el) => el.validity.valueMissing") is True
    page.wait_for_timeout(200)
    assert requests == [] and page.locator("#answer").is_hidden()
    # a knowledge base name over the API's limit comes back as keel's error body {error, message, hint}
    ask(page, "When was Pelican Point lighthouse built?", kb="k" * 80)
    error = page.get_by_role("alert")
    expect(error.locator("code")).to_have_text("input_error", timeout=30_000)
    expect(error).to_contain_text("HTTP 422")
    expect(error.locator(".error-message")).to_contain_text("kb")
    expect(error.locator(".error-hint")).to_contain_text("What to do: see /openapi.json")
    assert page.locator("#answer").is_hidden()
    # the next good question clears it
    ask(page, "When was Pelican Point lighthouse built?")
    expect(page.locator("#answer")).to_be_visible(timeout=60_000)
    expect(page.get_by_role("alert")).to_be_hidden()


def test_api_key_is_kept_in_local_storage_and_sent(page: Page, server: dict[str, Any]) -> None:
    seen: list[str | None] = []
    page.on("request", lambda r: seen.append(r.headers.get("authorization")) if "/v1/" in r.url else None)
    page.get_by_label("API key", exact=True).fill("keel_000000000000_notarealkeynotarealkey")
    page.get_by_role("button", name="Save key").click()
    expect(page.locator("#key-state")).to_have_text("key saved in this browser")
    page.reload()
    expect(page.get_by_label("API key", exact=True)).to_have_value("keel_000000000000_notarealkeynotarealkey")
    # auth is off on loopback with no keys, but an unknown key is still refused: the error says so
    page.get_by_role("button", name="Refresh recent traces").click()
    expect(page.locator("#traces")).to_contain_text("Could not load traces")
    assert "Bearer keel_000000000000_notarealkeynotarealkey" in seen
    page.get_by_role("button", name="Forget").click()
    assert page.evaluate("localStorage.getItem('keel.apiKey')") is None


def test_with_keys_the_page_asks_for_one_and_then_works(browser: Browser, tmp_path: Path) -> None:
    """Once a key exists, loopback needs it too: the page shows the 401 with its hint, then works with the key."""
    root = tmp_path / "auth"
    root.mkdir()
    env = _setup(root)
    created = json.loads(_keel(root, env, "keys", "create", "ann", "--json"))
    with _serving(root, env) as base:
        context = browser.new_context()
        page = context.new_page()
        page.goto(base + "/")  # the page itself is public; the API behind it is not
        expect(page.locator("#traces")).to_contain_text("Could not load traces")
        ask(page, "hello there")
        error = page.get_by_role("alert")
        expect(error.locator("code")).to_have_text("unauthorized", timeout=30_000)
        expect(error).to_contain_text("HTTP 401")
        expect(error.locator(".error-hint")).to_contain_text("keel keys create")

        page.get_by_label("API key", exact=True).fill(created["key"])
        page.get_by_role("button", name="Save key").click()
        expect(page.locator("#traces")).not_to_contain_text("Could not load traces")
        ask(page, "hello there")
        expect(page.locator("#answer-status")).to_have_text("answered", timeout=60_000)
        expect(error).to_be_hidden()
        expect(page.locator("#curation-box")).to_be_hidden()  # ann's key may not curate (403): no panel
        trace_id = page.locator("#trace-id").inner_text()
        # the API lists the trace for the key's holder, and refuses anyone without a key
        listed = httpx.get(f"{base}/v1/traces", headers={"Authorization": f"Bearer {created['key']}"}, timeout=10)
        assert trace_id in [t["trace_id"] for t in listed.json()]
        assert httpx.get(f"{base}/v1/traces", timeout=10).status_code == 401
        context.close()

// keel web UI: plain DOM, no framework, no external resource.
// Rule of this file: text from the server (answers, sources, traces, errors) only ever
// reaches the page through textContent or createTextNode, never innerHTML.
"use strict";

(function () {
  const KEY_STORE = "keel.apiKey";
  const $ = (id) => document.getElementById(id);
  const state = { answer: null, busy: false, openTrace: null };

  // -- small DOM helpers -------------------------------------------------------------

  /** el("li", {class: "x"}, "text", child): children are strings (as text) or nodes. */
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (name === "class") node.className = value;
      else if (name === "text") node.textContent = String(value);
      else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
      else node.setAttribute(name, value === true ? "" : String(value));
    }
    for (const child of children) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function clear(node) {
    while (node.firstChild) node.removeChild(node.firstChild);
  }

  function setText(id, text) {
    $(id).textContent = text === null || text === undefined ? "" : String(text);
  }

  /** A link only for http(s) addresses; anything else (file paths, javascript:) stays text. */
  function uriNode(uri) {
    if (!uri) return null;
    try {
      const url = new URL(String(uri));
      if (url.protocol === "http:" || url.protocol === "https:") {
        return el("a", { href: url.href, rel: "noopener noreferrer", target: "_blank" }, String(uri));
      }
    } catch (_) { /* not a URL: a file path */ }
    return el("code", {}, String(uri));
  }

  const fmt = {
    usd(v) {
      const n = Number(v || 0);
      return n === 0 ? "$0" : n < 0.01 ? "$" + n.toPrecision(2) : "$" + n.toFixed(4);
    },
    ms(v) {
      const n = Number(v || 0);
      return n >= 1000 ? (n / 1000).toFixed(2) + " s" : Math.round(n) + " ms";
    },
    pct(v) {
      return v === null || v === undefined ? "n/a" : Math.round(Number(v) * 100) + "%";
    },
    score(v) {
      return v === null || v === undefined ? "n/a" : Number(v).toFixed(3);
    },
    when(v) {
      if (v === null || v === undefined || v === "") return "";
      const d = typeof v === "number" ? new Date(v * 1000) : new Date(v);
      return isNaN(d.getTime()) ? String(v) : d.toLocaleString();
    },
  };

  // -- the API -----------------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, body) {
      const info = normaliseError(status, body);
      super(info.message);
      this.status = status;
      this.code = info.error;
      this.hint = info.hint;
    }
  }

  /** keel's error body is {error, message, hint}; tolerate FastAPI's {detail} and plain text too. */
  function normaliseError(status, body) {
    if (body && typeof body === "object") {
      if (body.error && typeof body.error === "object") body = body.error;
      if (body.message || body.error) {
        return { error: body.error || "error", message: body.message || String(body.error), hint: body.hint || null };
      }
      if (body.detail !== undefined) {
        const detail = typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail);
        return { error: "http_" + status, message: detail, hint: null };
      }
    }
    const text = typeof body === "string" && body.trim() ? body.trim().slice(0, 500) : "HTTP " + status;
    return { error: "http_" + status, message: text, hint: null };
  }

  async function api(method, path, body) {
    const headers = { Accept: "application/json" };
    const key = localStorage.getItem(KEY_STORE);
    if (key) headers.Authorization = "Bearer " + key;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    let response;
    try {
      response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    } catch (err) {
      throw new ApiError(0, { error: "network_error", message: "keel did not answer: " + err.message,
                              hint: "is `keel serve` still running?" });
    }
    const raw = await response.text();
    let data = raw;
    try { data = raw ? JSON.parse(raw) : null; } catch (_) { /* keep the text */ }
    if (!response.ok) throw new ApiError(response.status, data);
    return data;
  }

  // -- errors ------------------------------------------------------------------------

  function showError(err) {
    const box = $("error");
    clear(box);
    const code = err.code || "error";
    box.append(el("p", { class: "error-title" }, el("strong", {}, "Error"), " ", el("code", {}, code),
                  err.status ? " (HTTP " + err.status + ")" : ""));
    box.append(el("p", { class: "error-message" }, err.message || String(err)));
    let hint = err.hint;
    if (!hint && err.status === 401) hint = "enter an API key above (create one with `keel keys create`)";
    if (hint) box.append(el("p", { class: "error-hint" }, "What to do: ", hint));
    box.hidden = false;
  }

  function hideError() {
    $("error").hidden = true;
    clear($("error"));
  }

  // -- the answer ----------------------------------------------------------------------

  function renderAnswer(data) {
    state.answer = data;
    const box = $("answer");
    box.hidden = false;
    const status = data.status || "answered";
    const badge = $("answer-status");
    badge.textContent = status.replace("_", " ");
    badge.className = "badge status-" + status;
    setText("answer-text", data.answer || (status === "pending_approval" ? "Paused: a person must approve a tool call." : ""));
    renderApproval(status === "pending_approval" ? data.approval : null);
    $("feedback").hidden = status === "pending_approval";
    renderSources(data.sources || []);
    renderFacts(data);
    resetFeedback();
    if (data.error) {
      const e = typeof data.error === "object" ? data.error : { message: String(data.error) };
      showError({ code: e.error || "stopped", message: e.message || JSON.stringify(e), hint: e.hint });
    }
  }

  function renderSources(sources) {
    const list = $("sources");
    clear(list);
    $("no-sources").hidden = sources.length > 0;
    sources.forEach((s, i) => {
      const meta = el("p", { class: "source-meta" });
      const uri = uriNode(s.uri);
      if (uri) meta.append(uri);
      if (s.page !== null && s.page !== undefined) meta.append(el("span", { class: "page" }, "page " + s.page));
      meta.append(el("span", { class: "score", title: "retrieval score" }, "score " + fmt.score(s.score)));
      list.append(el("li", { class: "source", id: "source-" + (i + 1) },
        el("p", { class: "source-title" }, el("span", { class: "num", "aria-hidden": "true" }, "[" + (i + 1) + "] "),
           s.title || s.uri || s.id || "untitled"),
        meta,
        s.text ? el("blockquote", {}, s.text) : null));
    });
  }

  function renderFacts(data) {
    const facts = $("facts");
    clear(facts);
    const g = data.guardrail || {};
    const u = data.usage || {};
    const add = (term, ...value) => facts.append(el("div", { class: "fact" }, el("dt", {}, term), el("dd", {}, ...value)));
    add("Route", el("strong", { class: "route" }, data.route || "n/a"), data.route_reason ? " — " + data.route_reason : "");
    add("Guardrail", el("span", { class: "badge verdict-" + (g.verdict || "none") }, g.verdict || "n/a"),
        " groundedness " + fmt.pct(g.groundedness));
    const checks = Array.isArray(g.checks) ? g.checks : [];
    if (checks.length) {
      add("Checks", el("ul", { class: "checks" }, ...checks.map((c) => el("li", {}, checkText(c)))));
    }
    add("Tokens", (u.input_tokens || 0) + " in / " + (u.output_tokens || 0) + " out, " +
        (u.model_calls || 0) + " model call" + (u.model_calls === 1 ? "" : "s"));
    add("Cost", fmt.usd(u.cost_usd));
    add("Latency", fmt.ms(data.latency_ms));
    if (data.models && data.models.length) add("Models", data.models.join(", "));
    if (data.trace_id) {
      add("Trace", el("code", { id: "trace-id" }, data.trace_id), " ",
          el("button", { type: "button", class: "link", onclick: () => openTrace(data.trace_id) }, "Show trace"));
    }
  }

  function checkText(c) {
    if (c === null || typeof c !== "object") return String(c);
    const name = c.name || c.check || "check";
    const verdict = c.passed === true ? "pass" : c.passed === false ? "fail" : (c.verdict || c.status || "");
    const detail = c.detail || c.message || c.reason || "";
    return [name, verdict, detail].filter(Boolean).join(": ");
  }

  // -- approvals -----------------------------------------------------------------------

  function renderApproval(approval) {
    const box = $("approval");
    box.hidden = !approval;
    if (!approval) return;
    box.dataset.id = approval.id;
    setText("approval-tool", approval.tool);
    setText("approval-args", JSON.stringify(approval.args || {}, null, 2));
    setText("approval-id", approval.id);
    setText("approval-expires", fmt.when(approval.expires_at));
    $("approval-reason").value = "";
    $("approve").disabled = false;
    $("reject").disabled = false;
  }

  async function decide(id, approve, reason) {
    hideError();
    setBusy(true, approve ? "Approving and resuming the run…" : "Rejecting…");
    try {
      const body = approve ? {} : { reason: reason || null };
      const data = await api("POST", "/v1/approvals/" + encodeURIComponent(id) + (approve ? "/approve" : "/reject"), body);
      renderAnswer(data);
    } catch (err) {
      showError(err);
    } finally {
      setBusy(false);
      refreshSide();
    }
  }

  async function loadApprovals() {
    const list = $("approvals");
    try {
      const data = await api("GET", "/v1/approvals?status=pending");
      const items = (Array.isArray(data) ? data : data.approvals || data.items || [])
        .filter((a) => !a.status || a.status === "pending");
      clear(list);
      if (!items.length) list.append(el("li", { class: "muted" }, "None."));
      for (const a of items) {
        list.append(el("li", { class: "approval-item" },
          el("span", {}, el("strong", {}, a.tool), " ", el("code", {}, JSON.stringify(a.args || {}))),
          el("span", { class: "row" },
            el("button", { type: "button", class: "primary small", "aria-label": "Approve " + a.tool + " " + a.id,
                           onclick: () => decide(a.id, true) }, "Approve"),
            el("button", { type: "button", class: "danger small", "aria-label": "Reject " + a.tool + " " + a.id,
                           onclick: () => decide(a.id, false) }, "Reject"))));
      }
    } catch (err) {
      clear(list);
      list.append(el("li", { class: "muted" }, "Could not load approvals: " + err.message));
    }
  }

  // -- curation: up-voted answers a curator turns into few-shot examples ------------------

  async function loadCuration() {
    const box = $("curation-box");
    const list = $("curation");
    let items;
    try {
      items = await api("GET", "/v1/curation?status=pending");
    } catch (err) {
      // a key that may not curate (403) or none yet (401): the panel is not for this user
      box.hidden = err.status === 403 || err.status === 401;
      clear(list);
      if (!box.hidden) list.append(el("li", { class: "muted" }, "Could not load candidates: " + err.message));
      return;
    }
    box.hidden = false;
    clear(list);
    if (!items.length) list.append(el("li", { class: "muted" }, "None waiting."));
    for (const c of items) {
      const label = "candidate " + c.id;
      list.append(el("li", { class: "approval-item", "data-curation-id": String(c.id) },
        el("span", {}, el("strong", {}, c.question || ""), " ", el("span", { class: "muted" }, "→ " + (c.answer || ""))),
        el("span", { class: "row" },
          el("button", { type: "button", class: "primary small", "aria-label": "Accept " + label,
                         onclick: () => curate(c.id, true) }, "Accept"),
          el("button", { type: "button", class: "small", "aria-label": "Reject " + label,
                         onclick: () => curate(c.id, false) }, "Reject"))));
    }
  }

  async function curate(id, accept) {
    hideError();
    try {
      await api("POST", "/v1/curation/" + encodeURIComponent(id) + (accept ? "/accept" : "/reject"));
    } catch (err) {
      showError(err);
    }
    loadCuration();
  }

  // -- feedback ------------------------------------------------------------------------

  function resetFeedback() {
    $("thumbs-up").setAttribute("aria-pressed", "false");
    $("thumbs-down").setAttribute("aria-pressed", "false");
    $("thumbs-up").disabled = $("thumbs-down").disabled = !(state.answer && state.answer.trace_id);
    $("feedback-comment").value = "";
    setText("feedback-state", "");
  }

  async function sendFeedback(rating) {
    if (!state.answer || !state.answer.trace_id) return;
    const comment = $("feedback-comment").value.trim();
    setText("feedback-state", "Sending…");
    try {
      await api("POST", "/v1/feedback", { trace_id: state.answer.trace_id, rating, comment: comment || null });
      $("thumbs-up").setAttribute("aria-pressed", String(rating === "up"));
      $("thumbs-down").setAttribute("aria-pressed", String(rating === "down"));
      setText("feedback-state", "Thanks: feedback recorded (" + rating + ").");
      if (rating === "up") loadCuration();  // an up-vote is a new few-shot candidate
    } catch (err) {
      setText("feedback-state", "");
      showError(err);
    }
  }

  // -- traces --------------------------------------------------------------------------

  async function loadTraces() {
    const list = $("traces");
    try {
      const data = await api("GET", "/v1/traces?limit=15");
      const items = Array.isArray(data) ? data : data.traces || data.items || [];
      clear(list);
      if (!items.length) list.append(el("li", { class: "muted" }, "No traces yet."));
      for (const t of items) {
        const label = (t.name || "trace") + " · " + fmt.ms(t.duration_ms) + " · " + fmt.usd(t.cost_usd);
        list.append(el("li", {},
          el("button", { type: "button", class: "trace-item status-" + (t.status || "ok"),
                         "data-trace-id": t.trace_id, onclick: () => openTrace(t.trace_id) },
            el("span", { class: "trace-name" }, label),
            el("span", { class: "muted small" }, fmt.when(t.start_time) + " · " + String(t.trace_id).slice(0, 12)))));
      }
      markOpenTrace();
    } catch (err) {
      clear(list);
      list.append(el("li", { class: "muted" }, "Could not load traces: " + err.message));
    }
  }

  function markOpenTrace() {
    for (const item of document.querySelectorAll("#traces .trace-item")) {
      if (item.dataset.traceId === state.openTrace) item.setAttribute("aria-current", "true");
      else item.removeAttribute("aria-current");
    }
  }

  async function openTrace(traceId) {
    state.openTrace = traceId;
    markOpenTrace();
    const view = $("trace-view");
    const tree = $("span-tree");
    view.hidden = false;
    setText("trace-id-shown", traceId);
    clear(tree);
    tree.append(el("p", { class: "muted" }, "Loading…"));
    try {
      const data = await api("GET", "/v1/traces/" + encodeURIComponent(traceId));
      const roots = Array.isArray(data) ? data : data.spans || data.roots || data.tree || [];
      clear(tree);
      tree.append(el("ul", { class: "spans", role: "tree", "aria-label": "spans of trace " + traceId },
                     ...roots.map((s) => spanNode(s, 0))));
      view.scrollIntoView({ block: "nearest" });
    } catch (err) {
      clear(tree);
      tree.append(el("p", { class: "error-message" }, "Could not load the trace: " + err.message));
    }
  }

  function spanNode(span, depth) {
    const children = span.children || [];
    const summary = el("summary", {},
      el("span", { class: "span-name" }, span.name || "span"),
      span.kind ? el("span", { class: "kind" }, span.kind) : null,
      el("span", { class: "muted small" }, fmt.ms(span.duration_ms)),
      span.status && span.status !== "ok" ? el("span", { class: "badge status-error" }, span.status) : null);
    const attrs = Object.entries(span.attributes || {});
    const table = attrs.length
      ? el("details", { class: "attrs-box" }, el("summary", { class: "muted small" }, "attributes (" + attrs.length + ")"),
          el("table", { class: "attrs" }, el("tbody", {}, ...attrs.map(([k, v]) =>
            el("tr", {}, el("th", { scope: "row" }, k), el("td", {}, typeof v === "string" ? v : JSON.stringify(v)))))))
      : null;
    const details = el("details", depth < 2 ? { open: true } : {}, summary,
      span.status_message ? el("p", { class: "error-message" }, span.status_message) : null,
      table,
      children.length ? el("ul", { role: "group" }, ...children.map((c) => spanNode(c, depth + 1))) : null);
    return el("li", { role: "treeitem", "aria-expanded": depth < 2 ? "true" : "false" }, details);
  }

  function refreshSide() {
    loadTraces();
    loadApprovals();
    loadCuration();
  }

  // -- asking --------------------------------------------------------------------------

  function setBusy(busy, message) {
    state.busy = busy;
    $("ask-button").disabled = busy;
    $("approve").disabled = busy;
    $("reject").disabled = busy;
    $("answer").setAttribute("aria-busy", String(busy));
    setText("busy", busy ? message || "Working…" : "");
  }

  async function ask(event) {
    event.preventDefault();
    if (state.busy) return;
    const question = $("question").value.trim();
    if (!question) {
      showError({ code: "input_error", message: "Type a question first.", hint: null });
      $("question").focus();
      return;
    }
    hideError();
    const body = { question };
    const kb = $("kb").value.trim();
    const session = $("session").value.trim();
    if (kb) body.kb = kb;
    if (session) body.session = session;
    setBusy(true, "Thinking…");
    try {
      renderAnswer(await api("POST", "/v1/ask", body));
    } catch (err) {
      showError(err);
    } finally {
      setBusy(false);
      refreshSide();
    }
  }

  // -- the API key ---------------------------------------------------------------------

  function showKeyState() {
    setText("key-state", localStorage.getItem(KEY_STORE) ? "key saved in this browser" : "no key");
  }

  function init() {
    $("api-key").value = localStorage.getItem(KEY_STORE) || "";
    showKeyState();
    $("key-form").addEventListener("submit", (e) => {
      e.preventDefault();
      const key = $("api-key").value.trim();
      if (key) localStorage.setItem(KEY_STORE, key);
      else localStorage.removeItem(KEY_STORE);
      showKeyState();
      hideError();
      refreshSide();
    });
    $("key-forget").addEventListener("click", () => {
      localStorage.removeItem(KEY_STORE);
      $("api-key").value = "";
      showKeyState();
    });
    $("ask-form").addEventListener("submit", ask);
    $("question").addEventListener("keydown", (e) => {
      if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) $("ask-form").requestSubmit();
    });
    $("approve").addEventListener("click", () => decide($("approval").dataset.id, true));
    $("reject").addEventListener("click", () => decide($("approval").dataset.id, false, $("approval-reason").value.trim()));
    $("thumbs-up").addEventListener("click", () => sendFeedback("up"));
    $("thumbs-down").addEventListener("click", () => sendFeedback("down"));
    $("traces-refresh").addEventListener("click", loadTraces);
    $("approvals-refresh").addEventListener("click", loadApprovals);
    $("curation-refresh").addEventListener("click", loadCuration);
    refreshSide();
  }

  document.addEventListener("DOMContentLoaded", init);
})();

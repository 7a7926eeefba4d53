"""keel's own API: ask, approvals, feedback, traces, jobs; and the operational endpoints.

Handlers are plain ``def``: FastAPI runs them in its thread pool, so a model
call that takes seconds (llama.cpp on a CPU) blocks a worker thread, never the
event loop. Each returns the same JSON as the matching CLI command's ``--json``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Path, Query, Request
from fastapi.responses import JSONResponse, Response

from ..app import App
from ..errors import ApprovalRequired, BudgetExceeded, Forbidden, InputError, NotFound
from ..graph import Answer
from ._auth import Caller, CallerDep
from ._schemas import (
    AnswerOut,
    ApprovalOut,
    AskRequest,
    CurationOut,
    ErrorOut,
    FeedbackOut,
    FeedbackRequest,
    JobOut,
    JobRequest,
    RejectRequest,
    TraceSummaryOut,
    TraceTreeOut,
)
from ._timeout import run_with_timeout

__all__ = ["answer_response", "ops", "router"]

router = APIRouter(prefix="/v1")
ops = APIRouter()


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """Error bodies every /v1 route may answer (429: server.rate_limit), plus ``codes``."""
    return {code: {"model": ErrorOut} for code in (400, 401, 413, 422, 429, *codes)}


def keel_app(request: Request) -> App:
    return request.app.state.keel  # type: ignore[no-any-return]


def answer_response(answer: Answer) -> JSONResponse:
    """200 with the answer; 202 while it waits for a person; a budget refusal is raised (429).

    Any other error the run carries (an approval that expired before it was used) is named in
    the answer's ``error`` field, as the CLI names it in its exit code."""
    exc = answer.exception
    if isinstance(exc, BudgetExceeded):
        raise exc
    body = answer.to_dict()
    if exc is not None and not isinstance(exc, ApprovalRequired) and "error" not in body:
        body["error"] = exc.to_dict()
    return JSONResponse(body, status_code=202 if answer.status == "pending_approval" else 200)


_ANSWER_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"model": AnswerOut, "description": "answered, or stopped by a limit (status says which)"},
    202: {"model": AnswerOut, "description": "paused: a person must approve a tool call (status pending_approval)"},
    **_errors(502, 503, 504),
}


# -- the request graph -----------------------------------------------------------------------


@router.post("/ask", responses={**_ANSWER_RESPONSES, **_errors(403)}, tags=["ask"])
async def ask(body: AskRequest, request: Request, who: CallerDep) -> JSONResponse:
    """Answer a question through keel's graph: the Answer JSON with sources, route, cost and trace id.

    It runs as the API key's name and tenant; ``user`` and ``tenant`` may name others only with a
    key made ``--act-as-any`` (else 403). 504 after ``server.request_timeout_s``, and the run stops."""
    app, user, tenant = keel_app(request), who.user_for(body.user), who.tenant_for(body.tenant)
    answer = await run_with_timeout(request, lambda cancel: app.ask(
        body.question, kb=body.kb, session=body.session, user=user, tenant=tenant, cancel=cancel))
    return answer_response(answer)


# -- approvals -----------------------------------------------------------------------------------

ApprovalId = Annotated[str, Path(min_length=1, max_length=64)]


def _approval(app: App, approval_id: str) -> Any:
    for record in app.approvals():  # the list marks expired approvals as such; a lookup by id does not
        if record.id == approval_id:
            return record
    raise NotFound(f"no approval {approval_id!r}", hint="list them with GET /v1/approvals")


@router.get("/approvals", responses={200: {"model": list[ApprovalOut]}, **_errors()}, tags=["approvals"])
def list_approvals(
    request: Request,
    who: CallerDep,
    status: Literal["pending", "approved", "rejected", "expired", "used"] | None = None,
) -> JSONResponse:
    """Recorded approvals, oldest first (all, or those with ``status``)."""
    return JSONResponse([a.to_dict() for a in keel_app(request).approvals(status)])


@router.get("/approvals/{approval_id}", responses={200: {"model": ApprovalOut}, **_errors(404)}, tags=["approvals"])
def get_approval(approval_id: ApprovalId, request: Request, who: CallerDep) -> JSONResponse:
    """One approval: tool, arguments, requester, status, decision."""
    return JSONResponse(_approval(keel_app(request), approval_id).to_dict())


@router.post("/approvals/{approval_id}/approve", responses={**_ANSWER_RESPONSES, **_errors(404)}, tags=["approvals"])
async def approve(approval_id: ApprovalId, request: Request, who: CallerDep) -> JSONResponse:
    """Approve a paused tool call as the API key's owner; the run resumes and its answer is returned."""
    app = keel_app(request)
    return answer_response(
        await run_with_timeout(request, lambda cancel: app.approve(approval_id, by=who.approver, cancel=cancel)))


@router.post("/approvals/{approval_id}/reject", responses={**_ANSWER_RESPONSES, **_errors(404)}, tags=["approvals"])
async def reject(
    approval_id: ApprovalId,
    request: Request,
    who: CallerDep,
    body: Annotated[RejectRequest | None, Body()] = None,
) -> JSONResponse:
    """Reject a paused tool call (with an optional reason); the run finishes without it."""
    reason = body.reason if body is not None else None
    app = keel_app(request)
    return answer_response(
        await run_with_timeout(
            request, lambda cancel: app.reject(approval_id, by=who.approver, reason=reason, cancel=cancel)))


# -- feedback and traces ----------------------------------------------------------------------------


def _trace_owner(who: Caller) -> dict[str, str | None]:
    """Whose traces ``who`` may read, as TraceStore filters: by the rule ``user_for`` / ``tenant_for``
    apply to acting for others. Without a key (auth off) or with an ``act_as_any`` key, everyone's
    (no filter); else the user and tenant its requests run as: its own name, and its tenant if it has one."""
    if who.name is None or who.act_as_any:
        return {"user": None, "tenant": None}
    return {"user": who.user_for(None), "tenant": who.tenant_for(None)}


def _trace_tree(app: App, trace_id: str, who: Caller | None = None) -> list[Any]:
    """The trace's span tree; 404 when unknown, and when ``who`` may not read it (never 403:
    another user's trace id is not confirmed to exist)."""
    owner = _trace_owner(who) if who is not None else {}
    try:
        return app.telemetry.traces.tree(trace_id, **owner)  # type: ignore[no-any-return]
    except InputError:
        raise NotFound(f"no trace with id {trace_id!r}", hint="list recent traces with GET /v1/traces") from None


@router.post("/feedback", status_code=201, responses={201: {"model": FeedbackOut}, **_errors(404)}, tags=["feedback"])
def feedback(body: FeedbackRequest, request: Request, who: CallerDep) -> JSONResponse:
    """Thumbs up or down on an answer, by its trace id."""
    app = keel_app(request)
    _trace_tree(app, body.trace_id)
    vote = app.telemetry.feedback.record(body.trace_id, body.rating, comment=body.comment, user_id=who.name)
    return JSONResponse(vote.to_dict(), status_code=201)


def _curator(who: Caller) -> None:
    """Candidates quote other users' questions and answers: only a key that may act for anyone
    (or a server without keys) reads or decides them."""
    if who.name is not None and not who.act_as_any:
        raise Forbidden(f"the API key of {who.name!r} may not curate: candidates quote other users' answers",
                        hint="use a key made with `keel keys create NAME --act-as-any`, or `keel curation`")


@router.get("/curation", responses={200: {"model": list[CurationOut]}, **_errors(403)}, tags=["feedback"])
def list_curation(
    request: Request, who: CallerDep, status: Literal["pending", "accepted", "rejected"] = "pending"
) -> JSONResponse:
    """Up-voted answers waiting for a curator (``status=accepted``: those the answer prompts show)."""
    _curator(who)
    return JSONResponse(keel_app(request).telemetry.feedback.curation_queue(status))


@router.post("/curation/{curation_id}/{decision}", responses={200: {"model": CurationOut}, **_errors(403, 404)},
             tags=["feedback"])
def decide_curation(
    curation_id: int, decision: Literal["accept", "reject"], request: Request, who: CallerDep
) -> JSONResponse:
    """Accept a candidate (answer prompts show it for questions like it) or reject it."""
    _curator(who)
    feedback = keel_app(request).telemetry.feedback
    feedback.curate(curation_id, accept=decision == "accept")
    status = "accepted" if decision == "accept" else "rejected"
    return JSONResponse(next(c for c in feedback.curation_queue(status) if c["id"] == curation_id))


@router.get("/traces", responses={200: {"model": list[TraceSummaryOut]}, **_errors()}, tags=["traces"])
def list_traces(
    request: Request,
    who: CallerDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 20,
    since: Annotated[str | None, Query(max_length=40, description="24h, 7d, 30m or a date (2026-11-01)")] = None,
) -> JSONResponse:
    """Recent traces, newest first, with span count, tokens and cost: the API key's own (its user's,
    in its tenant if it has one); every trace with a key made ``--act-as-any`` or with auth off."""
    from ..telemetry.costs import parse_since

    rows = keel_app(request).telemetry.traces.list(limit=limit, since=parse_since(since), **_trace_owner(who))
    return JSONResponse([r.to_dict() for r in rows])


@router.get("/traces/{trace_id}", responses={200: {"model": TraceTreeOut}, **_errors(404)}, tags=["traces"])
def get_trace(trace_id: Annotated[str, Path(min_length=1, max_length=64)], request: Request,
              who: CallerDep) -> JSONResponse:
    """One trace as its tree of spans (timings, tokens, cost, attributes). 404 for another user's trace
    (or another tenant's), as for an unknown id, unless the key was made ``--act-as-any``."""
    roots = _trace_tree(keel_app(request), trace_id, who)
    return JSONResponse({"trace_id": trace_id, "spans": [r.to_dict() for r in roots]})


# -- jobs -----------------------------------------------------------------------------------------


def _inside_workspace(app: App, payload: dict[str, Any]) -> dict[str, Any]:
    """An ingest over HTTP reads only inside the workspace folder: a key holder must not be able to
    pull any file the server can read (its keys, its config) into a knowledge base and ask about it."""
    paths = payload.get("paths")
    if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
        return payload  # the job's own validation names the problem
    root = app.settings.workspace.resolve()
    resolved = []
    for raw in paths:
        path = (root / raw).resolve()  # relative paths are relative to the workspace
        if path != root and root not in path.parents:
            raise InputError(
                f"ingest over HTTP reads only inside the workspace folder ({root}); {raw!r} is outside it",
                hint="copy the files into the workspace (KEEL_WORKSPACE), or run `keel ingest` on the server",
            )
        resolved.append(str(path))
    return {**payload, "paths": resolved}


@router.post("/jobs", status_code=202, responses={202: {"model": JobOut}, **_errors(403)}, tags=["jobs"])
def submit_job(body: JobRequest, request: Request, who: CallerDep) -> JSONResponse:
    """Queue an ``ask``, ``ingest`` or ``extract`` job; poll the Location it returns."""
    app = keel_app(request)
    payload = _inside_workspace(app, body.payload) if body.kind == "ingest" else dict(body.payload)
    named = payload.get("user") if body.kind == "ask" and isinstance(payload.get("user"), str) else None
    user = who.user_for(named)
    if body.kind == "ask":
        asked = payload.get("tenant") if isinstance(payload.get("tenant"), str) else None
        tenant = who.tenant_for(asked)
        if tenant is not None:
            payload["tenant"] = tenant  # the key's tenant, or the one a caller that may name one named
    job = app.jobs.submit(body.kind, payload, user=user)
    data = job.to_dict()
    return JSONResponse(data, status_code=202, headers={"Location": f"/v1/jobs/{data['id']}"})


JobId = Annotated[str, Path(min_length=1, max_length=64)]


@router.get("/jobs/{job_id}", responses={200: {"model": JobOut}, **_errors(404)}, tags=["jobs"])
def get_job(job_id: JobId, request: Request, who: CallerDep) -> JSONResponse:
    """A job's status, attempts and, once finished, its result (an ask job's is the Answer JSON) or error."""
    return JSONResponse(keel_app(request).jobs.get(job_id).to_dict())


@router.post("/jobs/{job_id}/cancel", tags=["jobs"], responses={
    200: {"model": JobOut, "description": "it was queued: cancelled now, it never runs"},
    202: {"model": JobOut, "description": "it is running: its worker stops the run at its next step; poll the job"},
    **_errors(403, 404, 409)})
def cancel_job(job_id: JobId, request: Request, who: CallerDep) -> JSONResponse:
    """Cancel a job, recorded as the API key's name: a queued one at once (200, status cancelled); a running
    one is stopped by its worker at its next step (202, still running, then cancelled). 409 once it ended;
    403 for another user's job unless the key was made ``--act-as-any``."""
    jobs = keel_app(request).jobs
    _may_cancel(who, jobs.get(job_id).user)
    job = jobs.cancel(job_id, by=who.name)
    return JSONResponse(job.to_dict(), status_code=200 if job.status == "cancelled" else 202,
                        headers={"Location": f"/v1/jobs/{job.id}"})


def _may_cancel(who: Caller, owner: str | None) -> None:
    """A key cancels its own user's jobs (and those no key submitted); an ``act_as_any`` key, anyone's."""
    if who.name is None or who.act_as_any or owner in (None, who.name):
        return
    raise Forbidden(f"the API key of {who.name!r} may not cancel a job of user {owner!r}",
                    hint="cancel it with that user's key, or a key made with `keel keys create NAME --act-as-any`")


# -- operations -------------------------------------------------------------------------------------


@ops.get("/metrics", response_class=Response, responses={200: {"content": {"text/plain": {}}}, **_errors()},
         tags=["operations"])
def metrics(request: Request, who: CallerDep) -> Response:
    """Prometheus metrics: requests, routes, model calls, tokens, cost, guardrail verdicts, budgets."""
    from ..telemetry.metrics import CONTENT_TYPE_LATEST

    return Response(keel_app(request).telemetry.metrics.render(), media_type=CONTENT_TYPE_LATEST)


@ops.get("/healthz", tags=["operations"])
def healthz() -> dict[str, str]:
    """The process is up (no store or model is touched)."""
    return {"status": "ok"}


@ops.get("/readyz", responses={503: {"model": ErrorOut}}, tags=["operations"])
def readyz(request: Request) -> JSONResponse:
    """Ready to answer: the stores open and the default model is available; else 503 with the reason."""
    from ._ready import readiness

    checks = readiness(keel_app(request), request.app.state.auth.keys)
    failed = {name: c["detail"] for name, c in checks.items() if not c["ok"]}
    if failed:
        name, detail = next(iter(failed.items()))
        body = {"error": "not_ready", "message": f"{name}: {detail}",
                "hint": "see the checks; fix the failing store or model, then retry", "checks": checks}
        return JSONResponse(body, status_code=503)
    return JSONResponse({"status": "ready", "checks": checks})


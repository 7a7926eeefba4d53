"""Run the graph: one request in, one :class:`Answer` out, paused runs resumed by approval.

The runtime owns the compiled graph and its checkpointer. It opens the root
span (whose trace id the answer carries), turns a limit or a recursion cap
into a ``stopped`` answer with the partial state, and resumes a paused run
only after the approval store has recorded a person's decision.

A run given a :class:`~keel.CancelToken` stops at its next safe point once the
token is set (the server sets it when it stops waiting): a ``stopped`` answer
whose error is ``cancelled``, its root span an error, one ``cancelled`` audit
record. Its checkpoint is left as a limit leaves it: the session goes on.

A run that raises instead (every model failed, a provider's unexpected error)
still closes in the ledger: one ``failed`` record naming the error, written
before the same exception propagates. The exception carries ``keel_run``
(``route``, ``latency_ms``) so the App can count the request in its metrics.
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from typing import Any

from langgraph.errors import GraphRecursionError
from langgraph.types import Command
from openinference.semconv.trace import SpanAttributes as SA

from .._cancel import CancelToken, current
from ..errors import BudgetExceeded, Cancelled, InputError, KeelError, LimitExceeded
from ..guardrails import validate_question
from ..tools import ApprovalInvalid
from .answer import Answer
from .builder import build_graph
from .deps import GraphDeps
from .state import fresh_request
from .tracing import KIND, mark_error, set_attrs, span, trace_id_of

__all__ = ["GraphRuntime"]

_log = logging.getLogger(__name__)


class GraphRuntime:
    def __init__(self, deps: GraphDeps, checkpointer: Any, *, durability: str = "exit") -> None:
        self.deps = deps
        self.graph = build_graph(deps).compile(checkpointer=checkpointer)
        #: when LangGraph writes checkpoints: "exit" (when the run ends, pauses or fails: the cheapest,
        #: and enough to resume an approval), "async" or "sync" (after every step)
        self.durability = durability

    @property
    def default_kb(self) -> str:
        return str(getattr(self.deps.settings.knowledge, "default_kb", "default"))

    def _config(self, thread_id: str) -> dict[str, Any]:
        return {"configurable": {"thread_id": thread_id}, "recursion_limit": self.deps.settings.limits.recursion_limit}

    def _pending_interrupt(self, thread_id: str) -> dict[str, Any] | None:
        snapshot = self.graph.get_state(self._config(thread_id))
        for task in snapshot.tasks:
            for intr in task.interrupts:
                return dict(intr.value)
        return None

    def ask(
        self,
        question: str,
        *,
        kb: str | None = None,
        session: str | None = None,
        user: str | None = None,
        schema: dict[str, Any] | None = None,
        tenant: str | None = None,
        cancel: CancelToken | None = None,
    ) -> Answer:
        """Answer one question; a session id keeps the conversation in the checkpointer.

        ``user`` and ``tenant`` scope budgets and costs and are recorded in the audit ledger;
        ``cancel``, once set, stops the run at its next node, model call or tool call."""
        question = validate_question(question, self.deps.settings.guardrails)
        request_id = "req_" + uuid.uuid4().hex[:16]
        thread_id = session or request_id
        if session and self._pending_interrupt(session):
            raise InputError(
                f"session {session!r} is waiting for an approval",
                hint="decide it first: keel approvals list, then approve ID or reject ID",
            )
        inputs = fresh_request(
            request_id=request_id,
            thread_id=thread_id,
            question=question,
            kb=kb or self.default_kb,
            kb_named=kb is not None,
            session_id=session or "",
            user_id=user or "",
            tenant_id=tenant or "",
            clock_start=time.time(),
            schema=schema,
        )
        with span(
            self.deps.tracer,
            "keel.ask",
            KIND.CHAIN,
            **{
                SA.INPUT_VALUE: question,
                SA.SESSION_ID: session,
                SA.USER_ID: user,
                "keel.request_id": request_id,
                "keel.tenant_id": tenant,
            },
        ) as root:
            return self._run(root, inputs, thread_id, cancel)

    def resume(self, approval_id: str, *, approve: bool, approver: str, reason: str | None = None,
               cancel: CancelToken | None = None) -> Answer:
        """Record a person's decision and resume the paused run with it.

        A ``cancel`` token set before the decision is recorded raises Cancelled and changes
        nothing (the approval stays pending); once recorded, the decision is carried out (an
        approved call runs) and the run stops after it."""
        if cancel is not None and cancel.reason is not None:
            self.deps.audit("cancelled", {"approval_id": approval_id, "reason": cancel.reason})
            raise Cancelled(cancel.reason)
        record = self.deps.approvals.decide(approval_id, approve=approve, approver=approver, reason=reason)
        pending = self._pending_interrupt(record.run_id)
        if not pending or pending.get("approval", {}).get("id") != approval_id:
            raise ApprovalInvalid(
                f"no run is waiting for approval {approval_id}", hint="the run may have finished already; ask again"
            )
        self.deps.audit(
            "approval_decided",
            {
                "id": approval_id,
                "status": record.status,
                "by": approver,
                "tool": record.tool,
                "args_hash": record.args_hash,
            },
        )
        command = Command(resume={"approval_id": approval_id, "status": record.status, "by": approver})
        # the resumed run is the asker's, as its first half was: its trace names them (and is theirs to read)
        asked = self.graph.get_state(self._config(record.run_id)).values
        with span(
            self.deps.tracer,
            "keel.resume",
            KIND.CHAIN,
            **{
                "keel.approval_id": approval_id,
                "keel.decision": record.status,
                "keel.approver": approver,
                SA.USER_ID: asked.get("user_id") or None,
                "keel.tenant_id": asked.get("tenant_id") or None,
            },
        ) as root:
            answer = self._run(root, command, record.run_id, cancel)
        if record.status == "expired" and answer.exception is None:
            answer.exception = ApprovalInvalid(
                f"approval {approval_id} expired before it was approved", hint="ask again to get a new approval"
            )
        return answer

    def _run(self, root: Any, inputs: Any, thread_id: str, cancel: CancelToken | None) -> Answer:
        started = time.perf_counter()
        trace_id = trace_id_of(root)
        config = self._config(thread_id)
        error: KeelError | None = None
        bound = current.set(cancel) if cancel is not None else None
        try:
            self.graph.invoke(inputs, config, durability=self.durability)  # type: ignore[arg-type]
        except (LimitExceeded, BudgetExceeded, Cancelled) as exc:
            error = exc
        except GraphRecursionError:
            limit = self.deps.settings.limits.recursion_limit
            error = LimitExceeded("recursion_limit", limit, limit)
        except Exception as exc:
            self._failed(exc, inputs, config, thread_id, started)
            raise
        finally:
            if bound is not None:
                current.reset(bound)
        if error is not None:
            mark_error(root, error.message)
            if isinstance(error, Cancelled):
                self.deps.audit("cancelled", {"thread_id": thread_id, "reason": error.reason, **error.to_dict()})
            else:
                self.deps.audit("stopped", {"thread_id": thread_id, **error.to_dict()})
        values = self.graph.get_state(config).values
        answer = self._answer(values, thread_id, trace_id, started, error)
        set_attrs(
            root,
            **{
                SA.OUTPUT_VALUE: answer.answer[:2000],
                "keel.status": answer.status,
                "keel.route": answer.route,
                "keel.verdict": answer.guardrail.get("verdict"),
            },
        )
        return answer

    def _failed(self, exc: Exception, inputs: Any, config: dict[str, Any], thread_id: str, started: float) -> None:
        """The run raised: write its closing ``failed`` audit record and put ``keel_run`` (route,
        latency) on the exception. Only on this path; never replaces the exception being raised."""
        latency_ms = (time.perf_counter() - started) * 1000.0
        try:
            values = self.graph.get_state(config).values
        except Exception:  # the checkpointer may be what failed
            values = {}
        request_id = values.get("request_id") or (inputs.get("request_id", "") if isinstance(inputs, dict) else "")
        route = values.get("route") or ""
        if isinstance(exc, KeelError):
            detail = exc.to_dict()
        else:
            detail = {"error": "internal_error", "message": f"{type(exc).__name__}: {exc}", "hint": None}
        try:
            self.deps.audit("failed", {"request_id": request_id, "thread_id": thread_id, "route": route,
                                       "latency_ms": round(latency_ms, 3), **detail})
        except Exception:
            _log.exception("could not write the failed audit record of %s", thread_id)
        # an exception type that takes no attributes is counted without its route and latency
        with contextlib.suppress(Exception):
            exc.keel_run = {"route": route, "latency_ms": latency_ms}  # type: ignore[attr-defined]

    def _answer(
        self, values: dict[str, Any], thread_id: str, trace_id: str, started: float, error: KeelError | None
    ) -> Answer:
        pending = None if error else self._pending_interrupt(thread_id)
        status = "stopped" if error else ("pending_approval" if pending else "answered")
        exception = error
        if pending:
            approval = pending["approval"]
            exception = _approval_required(approval)
        run_error = values.get("error")
        if exception is None and run_error and run_error.get("error") == "approval_invalid":
            exception = ApprovalInvalid(run_error["message"], hint=run_error.get("hint"))
        text = values.get("answer", "") if status == "answered" else ""
        if status == "pending_approval":
            text = f"Waiting for a person to approve {pending['approval']['tool']}."
        return Answer(
            status=status,
            answer=text,
            route=values.get("route", ""),
            route_reason=values.get("route_reason", ""),
            sources=values.get("sources") or [],
            guardrail=values.get("guardrail") or {},
            usage=values.get("usage") or {},
            models=values.get("models") or [],
            trace_id=trace_id,
            latency_ms=(time.perf_counter() - started) * 1000.0,
            approval=pending["approval"] if pending else None,
            error=error.to_dict() if error else run_error,
            run_id=thread_id,
            exception=exception,
        )


def _approval_required(approval: dict[str, Any]) -> KeelError:
    from ..errors import ApprovalRequired

    return ApprovalRequired(approval["id"], approval["tool"])

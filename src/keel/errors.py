"""keel's one exception tree.

Every error keel raises on purpose is a ``KeelError``. Each class carries the
CLI exit code and the HTTP status it maps to, and every message says what to
do next. Vendor exceptions (openai, anthropic, chromadb, llama_cpp) are
translated where they enter keel and never travel further.

    KeelError
    ├── UserError                  the caller must change something          exit 2
    │   ├── ConfigError            keel.yaml or KEEL_* is wrong               exit 2
    │   ├── MissingAPIKey          a named key is not in the environment      exit 2
    │   ├── MissingDependency      an optional extra is not installed         exit 2
    │   ├── SchemaError            a schema cannot be loaded or satisfied     exit 2
    │   ├── InputError             a bad argument, document or question       exit 2
    │   ├── NotFound               no such job, trace, approval or document   exit 2 (HTTP 404)
    │   ├── Unauthorized           no API key, or a revoked or unknown one    exit 2 (HTTP 401)
    │   ├── Forbidden              the key may not do that (act for others)   exit 2 (HTTP 403)
    │   ├── JobFinished            the job already ended: nothing to cancel   exit 2 (HTTP 409)
    │   └── RateLimitExceeded      this caller sent too many requests to keel exit 2 (HTTP 429)
    ├── RunError                   the run could not finish                   exit 1
    │   ├── ModelError             a model call failed after retries          exit 3
    │   │   ├── ModelUnavailable   endpoint unreachable / 5xx / timeout
    │   │   ├── RateLimited        429; carries retry_after
    │   │   ├── ModelTimeout       the call took longer than its timeout
    │   │   ├── BadModelResponse   a body that could not be parsed
    │   │   ├── ModelRefused       4xx that retrying will not fix (not 429)
    │   │   ├── CircuitOpen        the breaker for this model is open
    │   │   └── AllModelsFailed    every model of the chain failed
    │   ├── BudgetExceeded         a budget would be overspent                exit 4
    │   ├── ValidationFailed       structured output never validated          exit 5
    │   ├── RetrievalError         the knowledge base could not be read       exit 6
    │   ├── StoreLocked            another process holds the embedded store   exit 6
    │   ├── GuardrailBlocked       an input or output guard stopped the run   exit 7
    │   ├── LimitExceeded          steps, tokens, cost or wall time ran out   exit 8
    │   ├── RequestTimeout         the server stopped waiting for the answer  exit 1 (HTTP 504)
    │   ├── Cancelled              the run was stopped (timeout, Ctrl-C, job) exit 130 (HTTP 499)
    │   ├── StateUnavailable       the database of paused runs is unreachable exit 1 (HTTP 503)
    │   ├── BrokerUnavailable      the Celery broker cannot be reached        exit 1 (HTTP 503)
    │   ├── BudgetStoreUnavailable the budget counters cannot be reached      exit 1 (HTTP 503)
    │   └── WorkerLost             a job's worker died before it finished     (recorded on the job)
    └── ApprovalRequired           control flow: a person must approve        exit 10

Exit code 9 is not an error class: ``keel eval`` exits 9 when its regression
gate fails (see ``keel.evals.gate``).
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "AllModelsFailed",
    "ApprovalRequired",
    "BadModelResponse",
    "BrokerUnavailable",
    "BudgetExceeded",
    "BudgetStoreUnavailable",
    "Cancelled",
    "CircuitOpen",
    "ConfigError",
    "Forbidden",
    "GuardrailBlocked",
    "InputError",
    "JobFinished",
    "KeelError",
    "LimitExceeded",
    "MissingAPIKey",
    "MissingDependency",
    "ModelError",
    "ModelRefused",
    "ModelTimeout",
    "ModelUnavailable",
    "NotFound",
    "RateLimitExceeded",
    "RateLimited",
    "RequestTimeout",
    "RetrievalError",
    "RunError",
    "SchemaError",
    "StateUnavailable",
    "StoreLocked",
    "Unauthorized",
    "UserError",
    "ValidationFailed",
    "WorkerLost",
]


class KeelError(Exception):
    """Base of every error keel raises on purpose."""

    exit_code: int = 1
    http_status: int = 500
    #: short machine-readable name, used in JSON error bodies
    code: str = "keel_error"

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        #: what the user should do next; shown after the message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message

    def to_dict(self) -> dict[str, Any]:
        return {"error": self.code, "message": self.message, "hint": self.hint}


# -- mistakes the caller can fix ------------------------------------------------------


class UserError(KeelError):
    exit_code = 2
    http_status = 400
    code = "user_error"


class ConfigError(UserError):
    code = "config_error"


class MissingAPIKey(UserError):
    code = "missing_api_key"

    def __init__(self, env_var: str, model: str) -> None:
        super().__init__(
            f"model {model!r} needs an API key in the environment variable {env_var}, which is not set",
            hint=f"export {env_var}=... or use the embedded model 'local', which needs no key",
        )
        self.env_var = env_var


class MissingDependency(UserError):
    code = "missing_dependency"

    def __init__(self, what: str, extra: str) -> None:
        super().__init__(f"{what} is not installed", hint=f'pip install "keel[{extra}]"')


class SchemaError(UserError):
    code = "schema_error"


class InputError(UserError):
    http_status = 422
    code = "input_error"


class NotFound(UserError):
    http_status = 404
    code = "not_found"


class Unauthorized(UserError):
    http_status = 401
    code = "unauthorized"


class Forbidden(UserError):
    """The caller is known, but its API key may not do this (e.g. name another user)."""

    http_status = 403
    code = "forbidden"


class JobFinished(UserError):
    """A job that already ended (succeeded, failed or cancelled) cannot be cancelled: HTTP 409 Conflict."""

    http_status = 409
    code = "job_finished"

    def __init__(self, job_id: str, status: str, *, when: str | None = None, by: str | None = None) -> None:
        verb = "was already cancelled" if status == "cancelled" else f"already {status}"
        detail = "".join([f" at {when}" if when else "", f" by {by}" if by else ""])
        super().__init__(
            f"job {job_id} {verb}{detail}; a finished job cannot be cancelled",
            hint=f"nothing to cancel: `keel jobs show {job_id}` (GET /v1/jobs/{job_id}) shows what it did",
        )
        self.job_id = job_id
        #: the job's status: succeeded, failed or cancelled
        self.status = status


class RateLimitExceeded(UserError):
    """The caller (an API key, or a client address without keys) sent more requests than
    ``server.rate_limit`` allows. Not :class:`RateLimited`, which is a model provider's 429."""

    http_status = 429
    code = "rate_limit_exceeded"

    def __init__(self, limit: int, retry_after: float) -> None:
        super().__init__(
            f"more than {limit} requests per minute from this caller",
            hint="wait Retry-After seconds and retry, or ask the operator to raise server.rate_limit.per_minute",
        )
        self.limit = limit
        #: seconds until the caller's window resets
        self.retry_after = retry_after


# -- run errors -----------------------------------------------------------------------


class RunError(KeelError):
    code = "run_error"


class ModelError(RunError):
    exit_code = 3
    http_status = 502
    code = "model_error"
    #: whether the gateway may retry the same model
    retryable: bool = False

    def __init__(self, message: str, *, model: str | None = None, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.model = model


class ModelUnavailable(ModelError):
    code = "model_unavailable"
    retryable = True


class RateLimited(ModelError):
    http_status = 429
    code = "rate_limited"
    retryable = True

    def __init__(self, message: str, *, model: str | None = None, retry_after: float | None = None) -> None:
        super().__init__(message, model=model, hint="wait and retry, or configure a fallback model")
        self.retry_after = retry_after


class ModelTimeout(ModelError):
    http_status = 504
    code = "model_timeout"
    retryable = True


class BadModelResponse(ModelError):
    code = "bad_model_response"
    retryable = True


class ModelRefused(ModelError):
    code = "model_refused"


class CircuitOpen(ModelError):
    http_status = 503
    code = "circuit_open"

    def __init__(self, model: str, retry_in: float) -> None:
        super().__init__(
            f"model {model!r} failed repeatedly; its circuit breaker is open for {retry_in:.1f}s more",
            model=model,
            hint="configure a fallback model in keel.yaml (roles.chat) or wait for the breaker to close",
        )
        self.retry_in = retry_in


class AllModelsFailed(ModelError):
    code = "all_models_failed"

    def __init__(self, errors: list[ModelError]) -> None:
        detail = "; ".join(f"{e.model}: {e.message}" for e in errors)
        super().__init__(
            f"every model in the chain failed: {detail}",
            hint="check the endpoints with `keel models`, or add a fallback model",
        )
        self.errors = errors


class BudgetExceeded(RunError):
    exit_code = 4
    http_status = 429
    code = "budget_exceeded"

    def __init__(self, budget: str, limit_usd: float, resets_at: str | None = None) -> None:
        when = f"; it resets at {resets_at}" if resets_at else ""
        super().__init__(
            f"budget {budget!r} ({_usd(limit_usd)}) would be exceeded{when}",
            hint="raise the budget in keel.yaml (budgets:) or wait for it to reset",
        )
        self.budget = budget
        self.limit_usd = limit_usd
        self.resets_at = resets_at


def _usd(amount: float) -> str:
    """Dollars as people write them: $10.00, and small budgets without rounding to zero."""
    if amount >= 0.01 or amount == 0:
        return f"${amount:,.2f}"
    return "$" + f"{amount:.8f}".rstrip("0")


class ValidationFailed(RunError):
    exit_code = 5
    http_status = 422
    code = "validation_failed"

    def __init__(self, message: str, *, raw_output: str, errors: list[str] | None = None) -> None:
        super().__init__(message, hint="simplify the schema, give clearer text, or use a larger model")
        self.raw_output = raw_output
        self.errors = errors or []


class RetrievalError(RunError):
    exit_code = 6
    http_status = 503
    code = "retrieval_error"


class StoreLocked(RetrievalError):
    code = "store_locked"


class GuardrailBlocked(RunError):
    exit_code = 7
    http_status = 400
    code = "guardrail_blocked"


class LimitExceeded(RunError):
    exit_code = 8
    http_status = 429
    code = "limit_exceeded"

    def __init__(self, limit: str, value: float, maximum: float) -> None:
        super().__init__(
            f"the run stopped: {limit} reached {value:g} of its limit {maximum:g}",
            hint=f"raise limits.{limit} in keel.yaml if the task needs more",
        )
        self.limit = limit


class RequestTimeout(RunError):
    """The HTTP server stopped waiting for a run (``server.request_timeout_s``). The run is
    cancelled too (:class:`Cancelled`): it stops at its next node, model call or tool call."""

    http_status = 504
    code = "request_timeout"

    def __init__(self, timeout_s: float) -> None:
        super().__init__(
            f"no answer within the server's request timeout of {timeout_s:g}s",
            hint="retry later, use POST /v1/jobs for long work, or raise server.request_timeout_s "
            "(keep limits.max_wall_s below it)",
        )
        self.timeout_s = timeout_s


class Cancelled(RunError):
    """A run stopped because its :class:`~keel.CancelToken` was set: the server's request timeout
    passed (``reason`` "timeout"), its HTTP client went away ("client_gone"), someone pressed
    Ctrl-C in ``keel ask`` or ``keel chat`` ("interrupted"), or its background job was cancelled
    ("job_cancelled"). The run stops at a safe point, before a node, model call or tool call;
    the embedded model stops at its next token; a remote model or tool call in flight finishes
    and is charged. Exit 130, as an interrupted command; HTTP
    499 (nginx's "client closed request"), which only the server's own metrics and logs see."""

    exit_code = 130
    http_status = 499
    code = "cancelled"

    _WHY = {"timeout": "the server's request timeout passed", "client_gone": "its client went away",
            "interrupted": "it was interrupted (Ctrl-C)", "job_cancelled": "someone cancelled its job"}
    _HINT = {"interrupted": "ask again when you want the answer",
             "job_cancelled": "submit the job again if its result is still wanted"}

    def __init__(self, reason: str) -> None:
        super().__init__(
            f"the run was cancelled: {self._WHY.get(reason, reason)}",
            hint=self._HINT.get(reason, "nobody was waiting for its answer; ask again, or use POST /v1/jobs for "
                                        "long work"),
        )
        #: why: "timeout", "client_gone", "interrupted", "job_cancelled", or what the code that set the token said
        self.reason = reason


# -- control flow ---------------------------------------------------------------------


class ApprovalRequired(KeelError):
    exit_code = 10
    http_status = 202
    code = "approval_required"

    def __init__(self, approval_id: str, tool: str) -> None:
        super().__init__(
            f"tool {tool!r} needs a person's approval (id {approval_id})",
            hint=f"keel approvals approve {approval_id}  or  keel approvals reject {approval_id}",
        )
        self.approval_id = approval_id
        self.tool = tool


class StateUnavailable(RunError):
    """The database that holds paused runs and approvals (``state.database_url``) cannot be reached."""

    http_status = 503
    code = "state_unavailable"


class BrokerUnavailable(RunError):
    """The Celery broker (Redis, RabbitMQ) behind ``jobs.broker_url`` cannot be reached."""

    http_status = 503
    code = "broker_unavailable"

    def __init__(self, url: str, detail: str) -> None:
        scheme = url.split(":", 1)[0]
        start = {"amqp": "start RabbitMQ", "pyamqp": "start RabbitMQ"}.get(scheme, "start Redis (redis-server)")
        super().__init__(
            f"the job broker at {redact_url(url)} cannot be reached: {detail}",
            hint=f"{start}, fix jobs.broker_url, or set jobs.backend: embedded in keel.yaml "
                 "(no broker needed)",
        )
        self.url = url


class BudgetStoreUnavailable(RunError):
    """The budget counters (``budgets.redis_url``) cannot be reached: model calls are refused, never
    made unbudgeted. A service that is down for now, not a bad request: HTTP 503."""

    http_status = 503
    code = "budget_store_unavailable"


class WorkerLost(RunError):
    """The worker running a job stopped heartbeating; recorded as the job's error."""

    code = "worker_lost"

    def __init__(self, attempts: int, final: bool) -> None:
        then = (f"after {attempts} attempt{'s' if attempts != 1 else ''} the job is failed"
                if final else "the job was queued again")
        super().__init__(
            f"the worker running this job stopped heartbeating (killed, crashed or cut off); {then}",
            hint="check the worker's log; a job that kills its worker every time needs a smaller input"
                 if final else None,
        )


def redact_url(url: str) -> str:
    """A connection URL without its password, for messages."""
    head, sep, tail = url.rpartition("@")
    if not sep or "://" not in head:
        return url
    scheme, _, creds = head.partition("://")
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}:***@{tail}" if ":" in creds else url

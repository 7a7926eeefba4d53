"""keel worker / keel jobs submit|show|list|cancel: background jobs from the command line."""

from __future__ import annotations

import contextlib
import getpass
import json
import logging
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ..errors import InputError
from ._common import ConfigOption, JsonOption, console, err_console, make_app, print_json

if TYPE_CHECKING:
    from ..jobs import Job

jobs_app = typer.Typer(name="jobs", help="Submit, show, list and cancel background jobs (run by `keel worker`).",
                       no_args_is_help=True)


def _payload(text: str) -> dict[str, Any]:
    """PAYLOAD is JSON text, or @FILE holding it."""
    if text.startswith("@"):
        try:
            text = Path(text[1:]).read_text(encoding="utf-8")
        except OSError as exc:
            raise InputError(f"cannot read {text[1:]}: {exc.strerror}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"the payload is not JSON: {exc.msg} at character {exc.pos}",
                         hint='e.g. \'{"question": "What does yield do?"}\'') from None
    if not isinstance(data, dict):
        raise InputError("the payload must be a JSON object", hint='e.g. \'{"question": "What does yield do?"}\'')
    return data


_COLOURS = {"succeeded": "green", "failed": "red", "running": "yellow", "cancelled": "magenta"}


def _show_cancel(cancel: dict[str, Any], *, running: bool) -> None:
    by = f" by {cancel['by']}" if cancel["by"] else ""
    then = "; its worker stops the run at its next step" if running else ""
    console.print(f"  cancelled at {cancel['requested_at']}{by}{then}", markup=False, highlight=False)


def _show(job: Job, as_json: bool) -> None:
    if as_json:
        print_json(job.to_dict())
        return
    colour = _COLOURS.get(job.status, "cyan")
    data = job.to_dict()
    console.print(f"{job.id}  {job.kind}  [{colour}]{job.status}[/]  attempts {job.attempts}/{job.max_attempts}  "
                  f"created {data['created_at']}", soft_wrap=True)
    if data["cancel"] is not None:
        _show_cancel(data["cancel"], running=job.status == "running")
    if job.error:
        console.print(f"  [red]{job.error.get('error')}[/]: {job.error.get('message')}", markup=True, highlight=False)
        if job.error.get("hint"):
            console.print(f"  what to do: {job.error['hint']}", markup=False, highlight=False)
    if job.result is not None and job.status == "succeeded":
        text = job.result.get("answer") if job.kind == "ask" else json.dumps(job.result, default=str)
        console.print(str(text), markup=False, highlight=False)


TimeoutOption = Annotated[float, typer.Option("--timeout", help="with --wait: give up after this many seconds")]


@jobs_app.command("submit")
def submit(
    kind: Annotated[str, typer.Argument(help="ask, ingest or extract")],
    payload: Annotated[str, typer.Argument(help='the arguments as a JSON object, or @FILE: ask {"question": ...}, '
                                                'ingest {"paths": [...]}, extract {"text": ..., "schema": {...}}')],
    user: Annotated[str | None, typer.Option("--user", help="who submits (budgets, audit)")] = None,
    wait: Annotated[bool, typer.Option("--wait", help="block until a worker finished the job")] = False,
    timeout: TimeoutOption = 600.0,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Queue a job; print its id (a worker runs it: `keel worker`, or a server's worker threads)."""
    queue = make_app(config).jobs
    job = queue.submit(kind, _payload(payload), user=user)
    if wait:
        job = queue.wait(job.id, timeout=timeout)
    _show(job, as_json)
    if job.status == "failed":
        raise typer.Exit(1)


@jobs_app.command("show")
def show(
    job_id: Annotated[str, typer.Argument(help="the job's id (job_...)")],
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """One job: status, attempts, result or error."""
    _show(make_app(config).jobs.get(job_id), as_json)


@jobs_app.command("list")
def list_jobs(
    status: Annotated[str | None, typer.Option("--status",
                                               help="queued, running, succeeded, failed or cancelled")] = None,
    limit: Annotated[int, typer.Option("--limit", help="how many, newest first")] = 50,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """The newest jobs, newest first."""
    jobs = make_app(config).jobs.list(status, limit)
    if as_json:
        print_json([j.to_dict() for j in jobs])
        return
    for job in jobs:
        _show(job, False)
    if not jobs:
        console.print("no jobs")


@jobs_app.command("cancel")
def cancel(
    job_id: Annotated[str, typer.Argument(help="the job's id (job_...)")],
    by: Annotated[str | None, typer.Option("--by", help="who cancels (default: your login name)")] = None,
    wait: Annotated[bool, typer.Option("--wait", help="a running job: block until its worker stopped it")] = False,
    timeout: TimeoutOption = 600.0,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Cancel a job: a queued one never runs; a running one is stopped by its worker at its next step.

    A job that already ended cannot be cancelled (exit 2)."""
    queue = make_app(config).jobs
    job = queue.cancel(job_id, by=by or getpass.getuser())
    if wait:
        job = queue.wait(job.id, timeout=timeout)
    _show(job, as_json)


ConcurrencyOption = Annotated[
    int | None, typer.Option("--concurrency", "-n", help="jobs run at once (default: jobs.workers, at least 1)")
]


def worker(
    concurrency: ConcurrencyOption = None,
    burst: Annotated[bool, typer.Option("--burst", help="embedded: exit once no job is queued or running")] = False,
    check: Annotated[bool, typer.Option(
        "--check", help="liveness probe: exit 0 if a worker here heartbeated in the last 30 s, else 1")] = False,
    heartbeat: Annotated[Path | None, typer.Option(
        "--heartbeat", help="the heartbeat file (default: one per data dir in the temp folder)")] = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Run background jobs: poll the job table (embedded), or consume jobs.queue (celery).

    While it runs the worker touches a heartbeat file every 10 s; `keel worker --check` reads it.
    """
    from ..jobs._health import Heartbeat, check_heartbeat, default_heartbeat_path, job_threads_alive

    app = make_app(config)
    beat = heartbeat or default_heartbeat_path(app.data_dir)
    if check:
        ok, why = check_heartbeat(beat)
        if as_json:
            print_json({"healthy": ok, "detail": why, "heartbeat": str(beat)})
        else:
            (console if ok else err_console).print(why, markup=False, highlight=False)
        raise typer.Exit(0 if ok else 1)
    queue = app.jobs
    if burst and queue.backend != "embedded":
        raise InputError("--burst works with the embedded backend only",
                         hint="a Celery worker runs until it is stopped (SIGTERM or Ctrl-C)")
    queue.check()
    if queue.backend == "embedded":
        threads = max(1, concurrency or queue.settings.workers)
        err_console.print(f"keel worker: {queue.store.engine.url.render_as_string(hide_password=True)}, "
                          f"{threads} thread(s)", markup=False, highlight=False)
    # Celery handles its own signals
    alive = job_threads_alive if queue.backend == "embedded" else (lambda: True)  # Celery: this process
    with _job_outcomes_logged(), Heartbeat(beat, alive=alive), \
            _graceful_stop(enabled=queue.backend == "embedded") as stop:
        ran = queue.work(concurrency=concurrency, burst=burst, stop=stop)
    if as_json:
        print_json({"backend": queue.backend, "jobs": ran})


@contextlib.contextmanager
def _graceful_stop(*, enabled: bool) -> Iterator[threading.Event]:
    """SIGTERM or Ctrl-C sets the event (the running jobs finish); a second one quits at once."""
    stop = threading.Event()
    if not enabled:
        yield stop
        return

    def _stop(signum: int, _frame: Any) -> None:
        err_console.print("stopping after the running job(s); send it again to quit now")
        stop.set()
        signal.signal(signum, signal.SIG_DFL if signum == signal.SIGTERM else signal.default_int_handler)

    previous = {sig: signal.signal(sig, _stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextlib.contextmanager
def _job_outcomes_logged() -> Iterator[None]:
    """Each job's outcome on stderr, one line each, while the worker runs."""
    logger = logging.getLogger("keel.jobs")
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    level, propagate = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        logger.propagate = propagate


def register(app: typer.Typer) -> None:
    app.add_typer(jobs_app)
    app.command()(worker)

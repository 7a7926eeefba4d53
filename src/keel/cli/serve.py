"""keel serve: the HTTP API, the OpenAI-compatible endpoint and the web UI."""

from __future__ import annotations

from typing import Annotated

import typer

from ._common import ConfigOption, err_console, make_app


def register(app: typer.Typer) -> None:
    @app.command()
    def serve(
        host: Annotated[str | None, typer.Option("--host", help="address to listen on (default: server.host)")] = None,
        port: Annotated[int | None, typer.Option("--port", "-p", min=1, max=65535,
                                                 help="port (default: server.port, 8080)")] = None,
        workers: Annotated[int | None, typer.Option(
            "--workers", "-w", min=1, help="processes (default: server.workers, 1); each loads its own model, "
            "and more than 1 needs knowledge.store: server")] = None,
        log_level: Annotated[str, typer.Option("--log-level", help="uvicorn's: debug, info, warning")] = "info",
        config: ConfigOption = None,
    ) -> None:
        """Serve the HTTP API (/v1/ask, /v1/chat/completions, ...) and the web UI at /.

        Off loopback, API keys are required: run `keel keys create NAME` first. SIGTERM lets
        requests in flight finish (server.shutdown_timeout_s) before the process exits.
        """
        from ..server import serve as run

        run(make_app(config), host=host, port=port, workers=workers, config=config, log_level=log_level,
            announce=lambda line: err_console.print(line, markup=False, highlight=False))

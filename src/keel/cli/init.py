"""keel init: write a commented starter keel.yaml."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..errors import InputError
from ._common import JsonOption, print_json

STARTER = """\
# keel.yaml: everything is optional; with no file keel runs the embedded model.
# Environment variables override any value: KEEL_GATEWAY__MAX_RETRIES=5
# Secrets are never written here: name the environment variable that holds them.

# home: .keel                  # data directory (stores, caches, traces); KEEL_HOME overrides

models:
  local:                       # the embedded SmolLM2-135M-Instruct on llama.cpp: no key, no network
    provider: local
    # path: ~/models/larger-model.gguf   # or any GGUF chat model you have
  # gpt-mini:
  #   provider: openai            # any OpenAI-compatible server: OpenAI, vLLM, Ollama, llama.cpp
  #   model: gpt-4o-mini
  #   api_key_env: OPENAI_API_KEY
  #   # base_url: http://localhost:8000/v1
  # claude:
  #   provider: anthropic
  #   model: claude-sonnet-4-5
  #   api_key_env: ANTHROPIC_API_KEY

roles:                         # ordered chains: the first model answers, the rest are fallbacks
  chat: [local]
  fast: [local]

gateway:
  timeout_s: 120
  max_retries: 3               # retries per model, exponential backoff with jitter, honours retry-after
  backoff_base_s: 0.5
  backoff_max_s: 20
  breaker:
    failure_threshold: 5       # consecutive failures that open a model's circuit
    reset_timeout_s: 30
  cache:
    enabled: true              # exact-match cache, temperature 0 only

structured:
  max_reasks: 2                # re-asks after invalid or unsupported output
"""


def register(app: typer.Typer) -> None:
    @app.command()
    def init(
        path: Annotated[Path, typer.Argument(help="where to write it")] = Path("keel.yaml"),
        force: Annotated[bool, typer.Option("--force", help="overwrite an existing file")] = False,
        as_json: JsonOption = False,
    ) -> None:
        """Write a commented starter keel.yaml."""
        if path.exists() and not force:
            raise InputError(f"{path} already exists", hint="use --force to overwrite it")
        path.write_text(STARTER, encoding="utf-8")
        if as_json:
            print_json({"written": str(path)})
        else:
            typer.echo(f"wrote {path}")

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
    backend: sqlite            # or redis (shared by every replica): redis_url: redis://127.0.0.1:6379/0; or memory

structured:
  max_reasks: 2                # re-asks after invalid or unsupported output

knowledge:
  store: embedded              # embedded (Chroma on disk under home) or server (`chroma run`)
  # server_host: localhost
  # server_port: 8000
  # catalog_url: postgresql+psycopg://user@host/keel   # documents and keyword index, shared by replicas;
  #                            # default: with store server, state/telemetry database_url if PostgreSQL
  default_kb: default
  chunk_tokens: 500            # chunk size and overlap, in the embedding model's tokens
  chunk_overlap: 50
  max_file_mb: 50
  keyword_weight: 0.5          # hybrid search: reciprocal rank fusion of vectors and keywords
  embeddings:
    provider: local            # all-MiniLM-L6-v2, shipped in a package, run on the CPU
    # provider: openai
    # model: text-embedding-3-small
    # api_key_env: OPENAI_API_KEY

router:
  judge: true                  # ask the cheap model only when the classifier is unsure
  judge_below: 0.55
  # model_path: router.npz     # where `keel router train` writes (default: <home>/router/model.npz)

limits:                        # end a runaway run with a typed error, never a hang
  max_steps: 8
  max_tokens: 32000
  max_cost_usd: 0.10
  max_wall_s: 180

tools:
  enabled: [search_knowledge, calculator, list_files, read_file, delete_file]
  require_approval: []         # destructive tools always need a person; add others here
  approval_ttl_s: 3600         # an approval not given in time counts as rejected

guardrails:
  min_groundedness: 0.75       # below: re-ask once, then quote the sources, or refuse
  max_input_chars: 8000
  block_patterns: []

prompts:
  curated_examples: 2          # accepted feedback answers (keel curation accept) shown as examples
  curated_min_similarity: 0.3  # ... only for questions this like theirs
  # dir: prompts               # templates replacing the built-ins by name (default: <home>/prompts)

telemetry:
  enabled: true
  capture_content: true        # false keeps prompts and answers out of traces
  # trace_retention_days: 30   # spans older than this are deleted (cost rows are kept)
  # otlp_endpoint: http://localhost:4318/v1/traces   # Phoenix, Langfuse or any OTLP collector
  # database_url: postgresql+psycopg://user@host/keel  # default: SQLite under home
  # webhook_url: https://hooks.example.com/keel
  # alerts:
  #   - {name: spend, metric: cost_usd, threshold: 10, window_s: 3600}
  #   - {name: errors, metric: error_rate, threshold: 0.05, window_s: 300}
  audit:
    enabled: true
    store_text: true           # false keeps hashes of question and answer text only

state:                         # paused runs (checkpoints), session history and tool approvals
  database_url: null           # null: telemetry.database_url if PostgreSQL, else SQLite under home
  # database_url: postgresql+psycopg://user@host/keel   # shared by every API replica

budgets:
  backend: sqlite              # or redis (shared by every replica): redis_url: redis://127.0.0.1:6379/0
  # request_usd: 0.05
  # user_usd: 1.00
  # limits:
  #   - {scope: user, usd: 5, per: day}
  #   - {scope: global, usd: 100, per: month}

server:                        # keel serve
  host: 127.0.0.1
  port: 8080
  auth: auto                   # keys required once one exists (keel keys create) or off loopback
  ui: true
  rate_limit:
    per_minute: 0              # requests per minute per API key (per client address without keys); 0: off
    backend: sqlite            # or redis, shared by every replica: redis_url: redis://127.0.0.1:6379/0
  # request_timeout_s: 210     # /v1/ask answers 504 after this; default limits.max_wall_s + 30
  shutdown_timeout_s: 30       # on SIGTERM, in-flight requests get this long to finish
  workers: 1                   # processes; each loads the model (knowledge.store: server for more than 1)

jobs:
  backend: embedded            # or celery, with broker_url: redis://127.0.0.1:6379/0
  workers: 1
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

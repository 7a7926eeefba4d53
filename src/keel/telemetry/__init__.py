"""Monitoring: traces, costs, budgets, alerts, feedback, the audit ledger, metrics.

The user's guide (every setting, command and series): docs/monitoring.md.

    setup_tracing(settings.telemetry, ...)   one TracerProvider, spans -> trace store / OTLP
    spans.*                                  GenAI + OpenInference attributes on spans
    Telemetry(settings)                      the App's monitoring: .traces .costs .feedback
                                             .audit .metrics .alerts, .attach(gateway)
    Budgets / build_budgets(settings)        the gateway's BudgetHook (SQLite or Redis)
    AuditLedger                              hash-chained decision records; ledger(event, data) queues
                                             (approvals written at once), .append writes, .flush

Names are imported on first use, so ``keel.models.gateway`` can import the span
helpers without loading the database layer.

In keel.yaml (every key optional)::

    telemetry:
      database_url: postgresql+psycopg://keel@db/keel   # default: SQLite at <home>/telemetry.sqlite3
      otlp_endpoint: http://127.0.0.1:6006/v1/traces     # Phoenix, Langfuse, any OTLP/HTTP collector
      capture_content: false                            # spans keep tokens and costs, not text
      sample_ratio: 0.2                                 # costs, metrics, budgets, audit see every call
      audit: {retention_days: 365, store_text: false}
      webhook_url: https://hooks.example/keel
      alerts:
        - {name: spend, metric: cost_usd, threshold: 10, window_s: 3600}
        - {name: errors, metric: error_rate, threshold: 0.05, window_s: 300}
    budgets:
      backend: redis                                    # default sqlite (<home>/budgets.sqlite3)
      request_usd: 0.50
      limits:
        - {scope: user, usd: 5, per: day}
        - {scope: global, usd: 200, per: month}
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "AlertManager",
    "AuditLedger",
    "Budgets",
    "CostStore",
    "FeedbackStore",
    "Metrics",
    "Telemetry",
    "TraceStore",
    "build_budgets",
    "no_audit",
    "setup_tracing",
    "shutdown_tracing",
    "verify_records",
]

_WHERE = {
    "AlertManager": "alerts",
    "AuditLedger": "audit",
    "verify_records": "audit",
    "Budgets": "budgets",
    "build_budgets": "budgets",
    "CostStore": "costs",
    "FeedbackStore": "feedback",
    "Metrics": "metrics",
    "Telemetry": "_telemetry",
    "no_audit": "_telemetry",
    "TraceStore": "traces",
    "setup_tracing": "tracing",
    "shutdown_tracing": "tracing",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

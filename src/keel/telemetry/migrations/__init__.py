"""Alembic migrations of the telemetry tables (traces, costs, feedback, audit)."""

"""Alembic migrations of the job table (keel_jobs), versioned apart from telemetry's."""

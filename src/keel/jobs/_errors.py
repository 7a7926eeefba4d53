"""The errors jobs raise live in keel's one tree (:mod:`keel.errors`); re-exported here."""

from __future__ import annotations

from ..errors import BrokerUnavailable, JobFinished, WorkerLost

__all__ = ["BrokerUnavailable", "JobFinished", "WorkerLost"]

"""Schemathesis fuzzes the OpenAPI document against the app (scripted graph): no 5xx, and every
response, status and content type is what the document says. Bounded to a few examples per route."""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path

import schemathesis
from hypothesis import HealthCheck, settings

from keel.server import KeyStore, create_app

from .test_server_api import scripted_app

# schemathesis.pytest.from_fixture does not work with this pytest (it reads a private node id), so the
# app is built at import, in a data directory of its own rather than the per-test one
_HOME = Path(tempfile.mkdtemp(prefix="keel-schema-"))
atexit.register(shutil.rmtree, _HOME, ignore_errors=True)
(_HOME / "workspace").mkdir()

_KEYS = KeyStore(f"sqlite:///{_HOME / 'keys.sqlite3'}")
_, _KEY = _KEYS.create("fuzzer")  # a real key, so the cases reach the routes instead of stopping at 401

schema = schemathesis.openapi.from_asgi(
    "/openapi.json", create_app(scripted_app(home=_HOME), keys=_KEYS, workers=False)
)


@schema.parametrize()
@settings(max_examples=6, deadline=None, suppress_health_check=list(HealthCheck), database=None)
def test_the_api_keeps_its_openapi_promises(case: schemathesis.Case) -> None:
    case.call_and_validate(
        headers={"Authorization": f"Bearer {_KEY}"},
        checks=[
            schemathesis.checks.not_a_server_error,
            schemathesis.checks.status_code_conformance,
            schemathesis.checks.content_type_conformance,
            schemathesis.checks.response_schema_conformance,
            schemathesis.checks.response_headers_conformance,
        ]
    )

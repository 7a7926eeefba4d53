"""Structured output: validation with re-ask, and every value checked against the source."""

from __future__ import annotations

import json
import random

import pytest
from pydantic import BaseModel

from keel.config import GatewaySettings, ModelConfig
from keel.errors import SchemaError, ValidationFailed
from keel.models import FakeProvider, Gateway
from keel.models.breaker import CircuitBreaker
from keel.models.gateway import ModelHandle
from keel.models.pricing import Pricer
from keel.structured import OutputSchema, SourceIndex, extract, find_unsupported, load_schema

TEXT = "This agreement dated 3 March 2024 between Acme Corp and Beta LLC is worth 25,000 EUR."


class LegalExtraction(BaseModel):
    contract_date: str
    party_a: str
    total_value: float
    currency: str


def _gateway(provider: FakeProvider) -> Gateway:
    handle = ModelHandle(name="fake", provider=provider, pricer=Pricer(ModelConfig(provider="fake")),
                         breaker=CircuitBreaker(5, 30))
    return Gateway(GatewaySettings(cache={"enabled": False}), {"fake": handle}, {"chat": ["fake"]},
                   sleep=lambda s: None, rng=random.Random(0))


def _json(**kw) -> str:
    return json.dumps(kw)


RIGHT = _json(contract_date="3 March 2024", party_a="Acme Corp", total_value=25000, currency="EUR")


@pytest.mark.parametrize(
    ("value", "supported"),
    [(25000, True), (25000.0, True), (250000, False), (2024, True), (3, True), (24, False)],
)
def test_numbers_are_normalised(value, supported):
    assert SourceIndex(TEXT).supports_number(value) is supported


@pytest.mark.parametrize(
    ("value", "supported"),
    [
        ("3 March 2024", True), ("2024-03-03", True), ("March 3, 2024", True), ("03/03/2024", True),
        ("2024-03-04", False), ("acme corp", True), ("Acme Corporation", False), ("EUR", True),
        ("USD", False), ("", False), ("Beta LLC", True),
    ],
)
def test_strings_and_dates_are_found_in_the_text(value, supported):
    assert SourceIndex(TEXT).supports_string(value) is supported


def test_european_and_scaled_numbers():
    src = SourceIndex("Der Wert beträgt 1.234.567,50 € und 2,5 Mio; the fee is 12k or 3.5 million dollars.")
    assert src.supports_number(1234567.5)
    assert src.supports_number(12000)
    assert src.supports_number(3_500_000)
    assert src.supports_string("EUR") and src.supports_string("USD")


def test_find_unsupported_walks_nested_data():
    data = {"party": {"name": "Acme Corp", "value": 99}, "items": [{"sku": "Beta LLC"}, {"sku": "Gamma"}]}
    fields = [d.field for d in find_unsupported(data, SourceIndex(TEXT))]
    assert fields == ["party.value", "items[1].sku"]


def test_right_answer_first_time_is_fully_verified():
    provider = FakeProvider([RIGHT])
    result = extract(TEXT, LegalExtraction, _gateway(provider))
    assert result.data == {"contract_date": "3 March 2024", "party_a": "Acme Corp", "total_value": 25000.0,
                           "currency": "EUR"}
    assert result.unverified == [] and result.attempts == 1 and result.model_calls == 1


def test_invented_values_are_reasked_with_the_discrepancy_named():
    invented = _json(contract_date="3 March 2024", party_a="Acme Corp", total_value=250000, currency="USD")
    provider = FakeProvider([invented, RIGHT])
    result = extract(TEXT, LegalExtraction, _gateway(provider))
    assert result.unverified == [] and result.attempts == 2
    feedback = provider.requests[1].messages[-1].content
    assert "total_value = 250000" in feedback and "currency = 'USD'" in feedback
    assert "25000" in feedback  # the numbers that are in the text are offered


def test_values_still_unsupported_are_reported_never_passed_off():
    invented = _json(contract_date="3 March 2024", party_a="Acme Corp", total_value=250000, currency="USD")
    provider = FakeProvider([invented], repeat_last=True)
    result = extract(TEXT, LegalExtraction, _gateway(provider), max_reasks=2)
    assert result.attempts == 3
    assert result.unverified == ["currency", "total_value"]
    assert result.to_dict()["unverified"] == ["currency", "total_value"]


def test_best_attempt_wins_when_a_reask_is_worse():
    half = _json(contract_date="3 March 2024", party_a="Acme Corp", total_value=250000, currency="EUR")
    worse = _json(contract_date="1 Jan 2020", party_a="Nobody", total_value=1, currency="XYZ")
    provider = FakeProvider([half, worse, worse])
    result = extract(TEXT, LegalExtraction, _gateway(provider))
    assert result.unverified == ["total_value"] and result.data["currency"] == "EUR"


def test_invalid_output_is_reasked_with_the_validation_error():
    provider = FakeProvider(['{"contract_date": "3 March 2024"', _json(party_a="Acme Corp"), RIGHT])
    result = extract(TEXT, LegalExtraction, _gateway(provider))
    assert result.attempts == 3 and result.unverified == []
    assert "not valid JSON" in provider.requests[1].messages[-1].content
    assert "total_value" in provider.requests[2].messages[-1].content


def test_never_valid_raises_validation_failed_with_the_raw_output():
    provider = FakeProvider(["I cannot do that"], repeat_last=True)
    with pytest.raises(ValidationFailed) as info:
        extract(TEXT, LegalExtraction, _gateway(provider), max_reasks=1)
    assert info.value.raw_output == "I cannot do that"
    assert info.value.exit_code == 5


def test_json_schema_file_validates_too(tmp_path):
    path = tmp_path / "S.json"
    path.write_text(json.dumps({
        "type": "object",
        "properties": {"contract_date": {"type": "string"}, "party_a": {"type": "string"},
                       "total_value": {"type": "number"}, "currency": {"type": "string"}},
        "required": ["contract_date", "party_a", "total_value", "currency"],
    }))
    schema = load_schema(str(path))
    provider = FakeProvider([_json(contract_date="3 March 2024", party_a="Acme Corp", total_value="lots",
                                   currency="EUR"), RIGHT])
    result = extract(TEXT, schema, _gateway(provider))
    assert result.data["total_value"] == 25000 and result.attempts == 2
    assert "total_value" in provider.requests[1].messages[-1].content
    sent = provider.requests[0].json_schema  # constrained decoding asked for, strings bounded by the text
    assert sent["required"] == schema.json_schema["required"]
    assert sent["properties"]["party_a"] == {"type": "string", "maxLength": len(TEXT)}


def test_module_model_reference_loads(tmp_path, monkeypatch):
    source = "from pydantic import BaseModel\nclass Invoice(BaseModel):\n  total: float\n"
    (tmp_path / "myschemas.py").write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))
    schema = load_schema("myschemas:Invoice")
    assert schema.model is not None and schema.json_schema["properties"]["total"]["type"] == "number"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("missing.json", "does not exist"),
        ("no_such_module:Model", "cannot import"),
        ("json:loads", "not a pydantic model"),
        ("just-a-word", "cannot read schema"),
    ],
)
def test_bad_schema_references_are_user_errors(spec, message):
    with pytest.raises(SchemaError, match=message):
        load_schema(spec)


def test_bad_schema_files_are_user_errors(tmp_path):
    bad_json = tmp_path / "bad.json"
    bad_json.write_text("{not json")
    with pytest.raises(SchemaError, match="not valid JSON"):
        load_schema(str(bad_json))
    not_object = tmp_path / "arr.json"
    not_object.write_text('{"type": "array"}')
    with pytest.raises(SchemaError, match="must describe an object"):
        load_schema(str(not_object))
    invalid = tmp_path / "invalid.json"
    invalid.write_text('{"type": "object", "properties": {"a": {"type": "nonsense"}}}')
    with pytest.raises(SchemaError, match="invalid JSON Schema"):
        load_schema(str(invalid))


def test_output_schema_rejects_non_schemas():
    with pytest.raises(SchemaError):
        OutputSchema.of(42)  # type: ignore[arg-type]

"""The public surface is small, sorted and importable."""

import keel
import keel.errors


def test_all_is_sorted_and_exported():
    assert keel.__all__ == sorted(keel.__all__)
    for name in keel.__all__:
        assert getattr(keel, name) is not None


def test_every_error_is_a_keel_error_with_an_exit_code():
    for name in keel.errors.__all__:
        cls = getattr(keel.errors, name)
        assert issubclass(cls, keel.errors.KeelError)
        assert isinstance(cls.exit_code, int) and 100 <= cls.http_status < 600
    assert keel.errors.__all__ == sorted(keel.errors.__all__)

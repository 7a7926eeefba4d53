"""The approval store: bound to the argument hash, single use, expiring, decided once, by a person."""

from __future__ import annotations

from pathlib import Path

import pytest

from keel.errors import InputError
from keel.tools import ApprovalInvalid, ApprovalStore, args_hash


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(tmp_path: Path, clock: Clock) -> ApprovalStore:
    return ApprovalStore.sqlite(tmp_path / "approvals.sqlite3", clock=clock)


ARGS = {"path": "notes.txt"}


def test_record_holds_tool_exact_args_hash_requester_and_expiry(store: ApprovalStore) -> None:
    a = store.create(run_id="r1", tool="delete_file", args=ARGS, requester="ann", ttl_s=60)
    assert a.to_dict() == {
        "id": a.id,
        "run_id": "r1",
        "tool": "delete_file",
        "args": ARGS,
        "args_hash": args_hash("delete_file", ARGS),
        "requester": "ann",
        "created_at": "2027-01-15T08:00:00+00:00",
        "expires_at": "2027-01-15T08:01:00+00:00",
        "status": "pending",
        "decided_by": None,
        "decided_at": None,
        "reason": None,
    }
    assert store.list("pending") == [a]


def test_approve_then_consume_once(store: ApprovalStore) -> None:
    a = store.create(run_id="r1", tool="delete_file", args=ARGS, requester="ann", ttl_s=60)
    assert store.decide(a.id, approve=True, approver="boss").status == "approved"
    assert store.consume(a.id, tool="delete_file", args=ARGS).decided_by == "boss"
    with pytest.raises(ApprovalInvalid, match="is used"):
        store.consume(a.id, tool="delete_file", args=ARGS)
    with pytest.raises(ApprovalInvalid, match="already used"):
        store.decide(a.id, approve=True, approver="boss")


@pytest.mark.parametrize(
    ("tool", "args"),
    [
        ("delete_file", {"path": "other.txt"}),
        ("read_file", ARGS),
        ("delete_file", {"path": "notes.txt", "force": True}),
    ],
)
def test_approval_covers_only_the_exact_call(store: ApprovalStore, tool: str, args: dict) -> None:
    a = store.create(run_id="r1", tool="delete_file", args=ARGS, requester="ann", ttl_s=60)
    store.decide(a.id, approve=True, approver="boss")
    with pytest.raises(ApprovalInvalid, match="altered"):
        store.consume(a.id, tool=tool, args=args)
    assert store.get(a.id).status == "approved"  # a mismatch does not burn it


def test_expiry_counts_as_rejection(store: ApprovalStore, clock: Clock) -> None:
    a = store.create(run_id="r1", tool="delete_file", args=ARGS, requester="ann", ttl_s=60)
    clock.now += 61
    assert store.decide(a.id, approve=True, approver="boss").status == "expired"
    with pytest.raises(ApprovalInvalid, match="expired, not approved"):
        store.consume(a.id, tool="delete_file", args=ARGS)
    assert store.list("pending") == []


def test_rejected_cannot_be_consumed_or_redecided(store: ApprovalStore) -> None:
    a = store.create(run_id="r1", tool="delete_file", args=ARGS, requester="ann", ttl_s=60)
    store.decide(a.id, approve=False, approver="boss", reason="no")
    with pytest.raises(ApprovalInvalid, match="rejected"):
        store.consume(a.id, tool="delete_file", args=ARGS)
    with pytest.raises(ApprovalInvalid, match="already rejected"):
        store.decide(a.id, approve=True, approver="mallory")


def test_unknown_id_and_anonymous_decisions_are_refused(store: ApprovalStore) -> None:
    with pytest.raises(ApprovalInvalid, match="no approval"):
        store.get("apr_nope")
    a = store.create(run_id="r1", tool="delete_file", args=ARGS, requester="ann", ttl_s=60)
    with pytest.raises(InputError, match="approver"):
        store.decide(a.id, approve=True, approver="  ")


def test_hash_is_canonical() -> None:
    assert args_hash("t", {"a": 1, "b": 2}) == args_hash("t", {"b": 2, "a": 1}) != args_hash("t", {"a": 1})


def test_deciding_an_unknown_id_is_not_found(store: ApprovalStore) -> None:
    from keel.tools.approvals import ApprovalNotFound

    with pytest.raises(ApprovalNotFound, match="no approval 'apr_nope'"):
        store.decide("apr_nope", approve=True, approver="boss")


def test_two_stores_on_one_file_decide_once_and_name_the_winner(tmp_path: Path, clock: Clock) -> None:
    import threading

    stores = [ApprovalStore.sqlite(tmp_path / "shared.sqlite3", clock=clock) for _ in range(2)]
    a = stores[0].create(run_id="r1", tool="delete_file", args=ARGS, requester="ann", ttl_s=60)
    start = threading.Barrier(6)
    outcomes: list[str] = []

    def decide(n: int) -> None:
        start.wait()
        try:
            stores[n % 2].decide(a.id, approve=True, approver=f"p{n}")
            outcomes.append("won")
        except ApprovalInvalid as exc:
            outcomes.append(exc.message)

    threads = [threading.Thread(target=decide, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winner = stores[1].get(a.id).decided_by
    assert sorted(outcomes) == sorted(["won"] + [f"approval {a.id} is already approved by {winner}"] * 5)

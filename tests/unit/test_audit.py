"""tasks.audit: the hash chain, compare-and-swap alias moves, the champion stack."""

from __future__ import annotations

import pytest

from trainpipe import audit, storage


def test_append_chains_records_and_verifies(tmp_path):
    root = str(tmp_path)
    first = audit.append(root, "m", "version_published", {"version": 1, "by": "ann"})
    second = audit.append(root, "m", "version_published", {"version": 2})

    assert (first["seq"], second["seq"]) == (1, 2)
    assert first["prev_sha256"] == audit.GENESIS and first["by"] == "ann"
    assert second["prev_sha256"] == storage.sha256_bytes(storage.read_bytes(audit.record_uri(root, "m", 1)))
    assert audit.verify_log(root, "m") == []
    assert storage.read_json(storage.join(audit.audit_uri(root, "m"), audit.HEAD))["seq"] == 2


def test_who_comes_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("TRAINPIPE_USER", "bob")
    assert audit.append(str(tmp_path), "m", "gate_verdict", {})["by"] == "bob"
    monkeypatch.delenv("TRAINPIPE_USER")
    monkeypatch.setenv("USER", "carol")
    assert audit.append(str(tmp_path), "m", "gate_verdict", {})["by"] == "carol"


def test_a_taken_number_is_refused(tmp_path):
    root = str(tmp_path)
    audit.append(root, "m", "version_published", {"version": 1})
    assert audit.try_append_at(root, "m", 1, audit.GENESIS, "alias_moved", {"alias": "champion"}) is None
    assert audit.read_log(root, "m")[0]["event"] == "version_published"


def test_move_decides_again_when_the_log_changed_meanwhile(tmp_path):
    root = str(tmp_path)
    seen = []

    def decide(current, records):
        seen.append((current, len(records)))
        if len(seen) == 1:  # another process moves the champion while this one decides
            audit.append(root, "m", "alias_moved", {"alias": "champion", "version": 7, "from_version": None})
        return 8, {"reason": "better"}

    move, _ = audit.move_alias_if(root, "m", "champion", decide, {"kind": "gate"})

    assert seen == [(None, 0), (7, 1)]
    assert (move["seq"], move["from_version"], move["version"]) == (2, 7, 8)
    assert audit.current_aliases(audit.read_log(root, "m")) == {"champion": 8}


def test_a_move_decided_against_writes_nothing(tmp_path):
    move, evidence = audit.move_alias_if(str(tmp_path), "m", "champion", lambda c, r: (None, {"why": "no"}), {})
    assert move is None and evidence == {"why": "no"}
    assert audit.read_log(str(tmp_path), "m") == []


def test_champion_stack_pops_on_rollback():
    moves = [{"event": "alias_moved", "alias": "champion", "version": v, "kind": k}
             for v, k in [(1, "gate"), (2, "gate"), (3, "manual_promote"), (2, "rollback"), (1, "rollback")]]
    other = {"event": "alias_moved", "alias": "staging", "version": 3, "kind": "manual"}
    assert audit.champion_stack(moves[:3]) == [1, 2, 3]
    assert audit.champion_stack(moves + [other]) == [1]
    assert audit.current_aliases(moves + [other]) == {"champion": 1, "staging": 3}


@pytest.mark.parametrize(("damage", "message"), [
    (lambda root: storage.write_bytes(audit.record_uri(root, "m", 2), b"{not json"), "not valid JSON"),
    (lambda root: storage.write_bytes(audit.record_uri(root, "m", 3), b'{"seq": 3}\n'), "edited"),
])
def test_verify_reports_damage(tmp_path, damage, message):
    root = str(tmp_path)
    for version in (1, 2, 3):
        audit.append(root, "m", "version_published", {"version": version})
    damage(root)
    assert any(message in p for p in audit.verify_log(root, "m"))


def test_an_anchor_kept_elsewhere_catches_a_consistent_rewrite_of_the_whole_log(tmp_path):
    import shutil

    root = str(tmp_path)
    audit.append(root, "m", "version_published", {"version": 1, "by": "ann"})
    audit.append(root, "m", "alias_moved", {"alias": "champion", "version": 1})
    anchor = audit.chain_head(root, "m")
    assert anchor.startswith("2:") and audit.check_anchor(root, "m", anchor) == []
    audit.append(root, "m", "version_published", {"version": 2})
    assert audit.check_anchor(root, "m", anchor) == []  # the log grew: the anchored record is still there
    # rewrite everything consistently (records, chain and HEAD), with another author for version 1
    shutil.rmtree(audit.audit_uri(root, "m"))
    first = audit.try_append_at(root, "m", 1, audit.GENESIS, "version_published", {"version": 1, "by": "mallory"})
    assert first is not None
    prev = storage.sha256_bytes(storage.read_bytes(audit.record_uri(root, "m", 1)))
    assert audit.try_append_at(root, "m", 2, prev, "alias_moved", {"alias": "champion", "version": 1}) is not None
    assert audit.verify_log(root, "m") == []  # the chain alone cannot tell
    problems = audit.check_anchor(root, "m", anchor)
    assert len(problems) == 1 and "rewritten" in problems[0]
    assert "not SEQ:SHA256" in audit.check_anchor(root, "m", "abc")[0]
    assert "gone" in audit.check_anchor(root, "m", "9:" + "0" * 64)[0]


def test_an_appender_whose_record_another_overwrote_appends_again(tmp_path, monkeypatch):
    """A store that lets two appenders both create record N (the later bytes landing last, as moto's server can
    under concurrent PUTs): the appender whose bytes are not there appends after the other's record, and the
    chain holds both."""
    root = str(tmp_path)
    real_create = storage.create_only
    rival = audit._make_record(1, audit.GENESIS, "gate_verdict", {"version": 7})

    def rival_lands_last(uri: str, data: bytes) -> bool:
        created = real_create(uri, data)
        if created and uri == audit.record_uri(root, "churn", 1):
            storage.write_bytes(uri, rival)
        return created

    monkeypatch.setattr(storage, "create_only", rival_lands_last)
    mine = audit.append(root, "churn", "version_published", {"version": 1})
    assert mine["seq"] == 2
    assert [(r["seq"], r["event"]) for r in audit.read_log(root, "churn")] == [(1, "gate_verdict"),
                                                                               (2, "version_published")]
    assert audit.verify_log(root, "churn") == []

"""Audit log: append-only, hash-chained records per model name, and the aliases derived from it.

Layout: `<artifacts>/audit/<name>/<seq>.json` (seq zero-padded, from 1). A record is
appended with a create-only write of the next number (O_EXCL locally, `If-None-Match: *`
on S3), so concurrent appenders serialize on the sequence number and none is lost: the
loser re-reads the log and tries the next number. Each record carries the sha256 of the
previous record's bytes and a sha256 of its own content, so an edited, removed or
reordered record breaks the chain. `HEAD.json` remembers the highest record written,
so a truncated tail is noticed too.

Aliases (`champion` and user-named ones) are not stored anywhere else: an alias's value is
its latest `alias_moved` record. Moving an alias is a compare-and-swap on the log: the
record is written at exactly the number after the last one read, and the write fails if
anything was appended in between. Two champions, or a move made on a stale view, cannot
happen; the full history of every alias is the log itself.
"""

from __future__ import annotations

import getpass
import json
import os
from collections.abc import Callable
from typing import Any, Optional

from trainpipe import storage
from trainpipe.provenance import now_iso

SEQ_WIDTH = 8
HEAD = "HEAD.json"
CHAMPION = "champion"
GENESIS = "0" * 64
EVENTS = ("version_published", "gate_verdict", "alias_moved")


def audit_uri(artifacts: str, name: str) -> str:
    return storage.join(artifacts, "audit", name)


def record_uri(artifacts: str, name: str, seq: int) -> str:
    return storage.join(audit_uri(artifacts, name), f"{seq:0{SEQ_WIDTH}d}.json")


def whoami() -> str:
    """Who acts, from the environment: TRAINPIPE_USER, else USER, else the login name."""
    return os.environ.get("TRAINPIPE_USER") or os.environ.get("USER") or getpass.getuser()



def content_sha256(record: dict[str, Any]) -> str:
    """Hash of a record's content, its own `sha256` field left out."""
    return storage.sha256_bytes(storage.dumps_json({k: v for k, v in record.items() if k != "sha256"}))


def record_seqs(artifacts: str, name: str) -> list[int]:
    names = storage.list_dir(audit_uri(artifacts, name))
    return sorted(int(n[:-5]) for n in names if n.endswith(".json") and n[:-5].isdigit())


# Records never change once written, so a process reads each one once when deciding a move
# (`verify_log` always reads the stored bytes afresh).
_SEEN: dict[str, bytes] = {}
_SEEN_LIMIT = 100_000


def _read_record(uri: str) -> bytes:
    data = _SEEN.get(uri)
    if data is None:
        data = storage.read_bytes(uri)
        if len(_SEEN) >= _SEEN_LIMIT:
            _SEEN.clear()
        _SEEN[uri] = data
    return data


def _snapshot(artifacts: str, name: str) -> tuple[int, str, list[dict[str, Any]]]:
    """One listing of the log: the last number, the sha256 of that record's bytes, and every record."""
    records, last, prev = [], 0, GENESIS
    for seq in record_seqs(artifacts, name):
        data = _read_record(record_uri(artifacts, name, seq))
        records.append(json.loads(data))
        last, prev = seq, storage.sha256_bytes(data)
    return last, prev, records


def read_log(artifacts: str, name: str) -> list[dict[str, Any]]:
    """Every record, in sequence order, as stored now (unverified: see `verify_log`)."""
    return [json.loads(storage.read_bytes(record_uri(artifacts, name, s))) for s in record_seqs(artifacts, name)]


def _tail(artifacts: str, name: str) -> tuple[int, str]:
    """The last record's number and the sha256 of its bytes (0 and the genesis hash for an empty log)."""
    seqs = record_seqs(artifacts, name)
    if not seqs:
        return 0, GENESIS
    return seqs[-1], storage.sha256_bytes(_read_record(record_uri(artifacts, name, seqs[-1])))


def _make_record(seq: int, prev: str, event: str, fields: dict[str, Any]) -> bytes:
    record = {**fields, "seq": seq, "prev_sha256": prev, "event": event, "at": now_iso("milliseconds"),
              "by": fields.get("by") or whoami()}
    record["sha256"] = content_sha256(record)
    return storage.dumps_json(record)


def try_append_at(artifacts: str, name: str, seq: int, prev: str, event: str,
                  fields: dict[str, Any]) -> Optional[dict[str, Any]]:
    """Write record `seq` only if no record holds that number yet; None when another appender got there first."""
    data = _make_record(seq, prev, event, fields)
    uri = record_uri(artifacts, name, seq)
    # Read back: a store that checks the create-only condition and writes in two steps (moto's server) can let
    # two appenders both create record `seq`; the one whose bytes are not there lost and appends again.
    if not storage.create_only(uri, data) or storage.read_bytes(uri) != data:
        return None
    _advance_head(artifacts, name, seq, storage.sha256_bytes(data))
    return json.loads(data)


def append(artifacts: str, name: str, event: str, fields: dict[str, Any], attempts: int = 1000) -> dict[str, Any]:
    """Append a record after whatever the log holds now; retries on a lost race."""
    for _ in range(attempts):
        seq, prev = _tail(artifacts, name)
        record = try_append_at(artifacts, name, seq + 1, prev, event, fields)
        if record is not None:
            return record
    raise RuntimeError(f"could not append to {audit_uri(artifacts, name)} after {attempts} attempts")


def append_once(artifacts: str, name: str, event: str, fields: dict[str, Any],
                same: Callable[[dict[str, Any]], bool], attempts: int = 1000) -> tuple[dict[str, Any], bool]:
    """Append a record unless the log already holds one that `same` accepts; (the record, whether it was
    written now). Written only right after a log read that held none, so of two runs appending the same fact
    at once exactly one writes it."""
    for _ in range(attempts):
        seq, prev, records = _snapshot(artifacts, name)
        for record in records:
            if record.get("event") == event and same(record):
                return record, False
        record = try_append_at(artifacts, name, seq + 1, prev, event, fields)
        if record is not None:
            return record, True
    raise RuntimeError(f"could not append to {audit_uri(artifacts, name)} after {attempts} attempts")


def _advance_head(artifacts: str, name: str, seq: int, sha: str) -> None:
    """Best effort: HEAD only moves forward (a racing writer may leave it one step behind)."""
    uri = storage.join(audit_uri(artifacts, name), HEAD)
    try:
        current = storage.read_json(uri)
    except FileNotFoundError:
        current = {"seq": 0}
    if current.get("seq", 0) < seq:
        storage.write_json(uri, {"seq": seq, "sha256": sha})


def verify_log(artifacts: str, name: str) -> list[str]:
    """Every problem found in the log: empty when the chain is intact."""
    problems: list[str] = []
    seqs = record_seqs(artifacts, name)
    prev = GENESIS
    expected = 1
    for seq in seqs:
        uri = record_uri(artifacts, name, seq)
        if seq != expected:
            problems.append(f"record(s) {expected}..{seq - 1} missing before {uri}")
        data = storage.read_bytes(uri)
        try:
            record = json.loads(data)
        except ValueError:
            problems.append(f"{uri}: not valid JSON")
            prev, expected = storage.sha256_bytes(data), seq + 1
            continue
        if record.get("seq") != seq:
            problems.append(f"{uri}: holds record {record.get('seq')} (moved or reordered)")
        if record.get("sha256") != content_sha256(record):
            problems.append(f"{uri}: content does not match its own sha256 (edited)")
        if record.get("prev_sha256") != prev:
            problems.append(f"{uri}: prev_sha256 does not match the record before it (chain broken)")
        prev, expected = storage.sha256_bytes(data), seq + 1
    head_uri = storage.join(audit_uri(artifacts, name), HEAD)
    if storage.exists(head_uri):
        head = storage.read_json(head_uri)
        last = seqs[-1] if seqs else 0
        if head.get("seq", 0) > last:
            problems.append(f"{head_uri} says record {head['seq']} was written, but the log ends at {last} "
                            "(records removed from the end)")
        elif head.get("seq") == last and head.get("sha256") != prev:
            problems.append(f"{record_uri(artifacts, name, last)}: bytes differ from what HEAD recorded (edited)")
    return problems


def chain_head(artifacts: str, name: str) -> str:
    """The anchor of the log as it is now: `SEQ:SHA256` of its last record's bytes. Every record carries the
    hash of the one before, so this one value commits to the whole log; kept outside the artifact store (a
    ticket, an Object Lock bucket), it catches even a consistent rewrite of log and HEAD (`check_anchor`)."""
    last, prev = _tail(artifacts, name)
    return f"{last}:{prev}"


def check_anchor(artifacts: str, name: str, anchor: str) -> list[str]:
    """Problems with an anchor taken earlier: the record it names must still be there with the same bytes (the
    log may have grown since)."""
    seq_text, _, sha = anchor.partition(":")
    if not seq_text.isdigit() or len(sha) != 64:
        return [f"anchor {anchor!r} is not SEQ:SHA256 as `trainpipe audit head` prints it"]
    seq = int(seq_text)
    if seq == 0:
        return [] if sha == GENESIS else [f"anchor {anchor!r}: record 0 is the genesis hash {GENESIS}"]
    uri = record_uri(artifacts, name, seq)
    if not storage.exists(uri):
        return [f"anchor {anchor!r}: record {seq} is gone from the log ({uri})"]
    now = storage.sha256_bytes(storage.read_bytes(uri))  # afresh, as verify_log reads
    if now != sha:
        return [f"anchor {anchor!r}: record {seq} now hashes to {now} (the log was rewritten since the anchor)"]
    return []


# --- aliases, derived from the log ------------------------------------------------------------


def alias_moves(records: list[dict[str, Any]], alias: Optional[str] = None) -> list[dict[str, Any]]:
    return [r for r in records if r.get("event") == "alias_moved" and (alias is None or r["alias"] == alias)]


def current_aliases(records: list[dict[str, Any]]) -> dict[str, int]:
    """Alias -> version, from the latest move of each (a move to None removes the alias)."""
    aliases: dict[str, int] = {}
    for move in alias_moves(records):
        if move["version"] is None:
            aliases.pop(move["alias"], None)
        else:
            aliases[move["alias"]] = move["version"]
    return aliases


def champion_stack(records: list[dict[str, Any]]) -> list[int]:
    """The champion's history as a stack: promotions push, rollbacks pop; the top is the champion."""
    stack: list[int] = []
    for move in alias_moves(records, CHAMPION):
        if move.get("kind") == "rollback":
            if stack:
                stack.pop()
        else:
            stack.append(move["version"])
    return stack


Decide = Callable[[Optional[int], list[dict[str, Any]]], tuple[Optional[int], dict[str, Any]]]


def move_alias_if(
    artifacts: str, name: str, alias: str, decide: Decide, fields: dict[str, Any], attempts: int = 1000,
) -> tuple[Optional[dict[str, Any]], dict[str, Any]]:
    """Compare-and-swap an alias. `decide(current, records)` returns the version to move it to (None:
    leave it) and its evidence; the move is written only at the number right after the log just read,
    so if anything was appended meanwhile the write fails and the decision is taken again on the new log.

    Returns (the move record or None, the last decision's evidence).
    """
    for _ in range(attempts):
        seq, prev, records = _snapshot(artifacts, name)
        current = current_aliases(records).get(alias)
        target, evidence = decide(current, records)
        if target is None:
            return None, evidence
        record = try_append_at(artifacts, name, seq + 1, prev, "alias_moved",
                               {**fields, "alias": alias, "version": target, "from_version": current,
                                "evidence": evidence})
        if record is not None:
            return record, evidence
    raise RuntimeError(f"could not move alias {alias!r} of {name!r} after {attempts} attempts")

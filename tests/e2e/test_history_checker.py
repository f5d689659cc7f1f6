"""The history checker on synthetic histories with known faults (no broker).

Each test builds the history of a small run by hand -- sends, acknowledgements,
consumer reads, the final drain -- with exactly one kind of fault in it, and
expects exactly that count (and no other) to be non-zero. A checker that
misses a fault here would let the cluster fault tests pass on a broken
cluster; one that counts a correct history as faulty would fail them on a good
one."""

from __future__ import annotations

import json

import pytest

import history
from history import SAFETY, HistoryError, Recorder, check, failover_times, percentile

T = "t"


class H:
    """A history under construction (events in the order they happened)."""

    def __init__(self):
        self.events: list[dict] = []
        self.clock = 1000.0

    def _ev(self, **ev) -> dict:
        self.clock += 0.01
        ev.setdefault("t", self.clock)
        self.events.append(ev)
        return ev

    @staticmethod
    def value(w: str, s: int) -> str:
        return f"{w}-{s:08d}"

    def send(self, w: str, s: int, p: int, key: str = None, headers=None) -> str:
        v = self.value(w, s)
        self._ev(ev="send", w=w, s=s, topic=T, p=p, k=key if key is not None else f"k{s % 3}",
                 v=v, h=headers if headers is not None else [["w", w]])
        return v

    def ack(self, v: str, p: int, o: int):
        w, s = v.rsplit("-", 1)
        self._ev(ev="ack", w=w, s=int(s), v=v, topic=T, p=p, o=o)

    def fail(self, v: str, p: int, err: str, definite: bool = False):
        w, s = v.rsplit("-", 1)
        self._ev(ev="fail", w=w, s=int(s), v=v, topic=T, p=p, err=err, definite=definite)

    def sent(self, v: str) -> dict:
        return next(e for e in self.events if e["ev"] == "send" and e["v"] == v)

    def poll(self, w: str, sess: int, p: int, o: int, v: str, key: str = None, headers=None):
        s = self.sent(v) if any(e["ev"] == "send" and e["v"] == v for e in self.events) else {}
        self._ev(ev="poll", w=w, sess=sess, topic=T, p=p, o=o, v=v,
                 k=key if key is not None else s.get("k"), h=headers if headers is not None else s.get("h", []))

    def drain(self, p: int, o: int, v: str, key: str = None, headers=None):
        s = self.sent(v) if any(e["ev"] == "send" and e["v"] == v for e in self.events) else {}
        self._ev(ev="drain", w="drain", topic=T, p=p, o=o, v=v,
                 k=key if key is not None else s.get("k"), h=headers if headers is not None else s.get("h", []))

    def drain_end(self, p: int, hw: int, lo: int = 0, complete: bool = True, next: int = None):
        self._ev(ev="drain_end", w="drain", topic=T, p=p, lo=lo, hw=hw,
                 next=hw if next is None else next, complete=complete)

    def written(self, w: str, p: int, n: int, start_seq: int = 0, start_offset: int = 0) -> list[str]:
        """n records sent by w to p and acknowledged at consecutive offsets."""
        out = []
        for i in range(n):
            v = self.send(w, start_seq + i, p)
            self.ack(v, p, start_offset + i)
            out.append(v)
        return out

    def drain_all(self, p: int, values: list[str], hw: int = None):
        for o, v in enumerate(values):
            self.drain(p, o, v)
        self.drain_end(p, len(values) if hw is None else hw)


def only(report, **expected):
    """Every safety count is 0 except the expected ones, which match."""
    want = {k: expected.get(k, 0) for k in SAFETY}
    assert report.safety == want, f"\n{report.format()}"


def clean_history() -> H:
    """Two producers over two partitions, one consumer reading everything in one
    session, then a complete drain: a correct run."""
    h = H()
    logs = {0: [], 1: []}
    offset = {0: 0, 1: 0}
    for s in range(10):
        for w in ("p0", "p1"):
            p = s % 2
            v = h.send(w, s, p)
            h.ack(v, p, offset[p])
            logs[p].append(v)
            offset[p] += 1
    for p in (0, 1):
        for o, v in enumerate(logs[p]):
            h.poll("c0", 1, p, o, v)
    for p in (0, 1):
        h.drain_all(p, logs[p])
    return h


def test_a_correct_history_has_every_count_zero():
    report = check(clean_history().events)
    only(report)
    assert report.ok
    assert report.info["sends"] == 20 and report.info["acked"] == 20
    assert report.info["polls"] == 20 and report.info["drained"] == 20
    assert report.info["indeterminate"] == 0 and report.info["drain_incomplete"] == 0
    assert "checker: OK" in report.format()


def test_indeterminate_and_failed_sends_may_or_may_not_be_stored():
    # a timed-out send may have been written (and is); another never was; a
    # send without any outcome (the producer stopped waiting) was written too
    h = H()
    a = h.written("p0", 0, 2)
    timed_out = h.send("p0", 2, 0)
    h.fail(timed_out, 0, "_MSG_TIMED_OUT")
    gone = h.send("p0", 3, 0)
    h.fail(gone, 0, "_MSG_TIMED_OUT")
    no_outcome = h.send("p0", 4, 0)
    h.drain_all(0, a + [timed_out, no_outcome])
    report = check(h.events)
    only(report)
    assert report.info["failed"] == 2 and report.info["indeterminate"] == 1
    assert report.info["errors"] == {"_MSG_TIMED_OUT": 2}


def test_acknowledged_write_missing_from_a_log_that_moved_past_it_is_lost():
    h = H()
    vals = h.written("p0", 0, 5)
    # the log holds offsets 0-1 and 3-4 of the acknowledged ones; offset 2 is a hole
    for o, v in enumerate(vals):
        if o != 2:
            h.drain(0, o, v)
    h.drain_end(0, 5)
    only(check(h.events), lost=1)


def test_acknowledged_write_read_once_then_gone_is_lost_and_its_read_vanished():
    # the high watermark went back below a record a consumer had already read
    h = H()
    vals = h.written("p0", 0, 5)
    for o, v in enumerate(vals):
        h.poll("c0", 1, 0, o, v)
    h.drain_all(0, vals[:3])  # the final log ends at 3
    only(check(h.events), lost=2, vanished_reads=2)


def test_acknowledged_write_beyond_the_final_high_watermark_nobody_read_is_unseen():
    h = H()
    vals = h.written("p0", 0, 5)
    h.drain_all(0, vals[:3])
    report = check(h.events)
    only(report, unseen=2)
    assert "hw" in report.examples["unseen"][0]


def test_acknowledged_write_in_a_partition_the_drain_never_read_is_unseen():
    h = H()
    h.written("p0", 0, 3)
    only(check(h.events), unseen=3)


def test_an_incomplete_drain_reports_unseen_not_lost_beyond_where_it_stopped():
    h = H()
    vals = h.written("p0", 0, 6)
    for o, v in enumerate(vals[:4]):
        h.drain(0, o, v)
    h.drain_end(0, hw=6, complete=False, next=4)
    report = check(h.events)
    only(report, unseen=2)
    assert report.info["drain_incomplete"] == 1


def test_value_stored_twice_is_a_duplicate():
    h = H()
    vals = h.written("p0", 0, 4)
    h.drain_all(0, vals + [vals[1]])  # the retry of seq 1 was appended again at offset 4
    report = check(h.events)
    only(report, duplicates=1)
    assert "p0-00000001" in report.examples["duplicates"][0]


def test_two_values_at_one_offset_are_inconsistent():
    # p0's record was acknowledged at offset 0 but the log holds p1's there
    h = H()
    a = h.send("p0", 0, 0)
    b = h.send("p1", 0, 0)
    h.ack(a, 0, 0)
    h.ack(b, 0, 1)
    h.drain_all(0, [b, a])
    report = check(h.events)
    only(report, inconsistent_offsets=2)  # offsets 0 and 1 each saw two values


def test_acknowledged_offset_that_is_empty_while_the_value_sits_elsewhere_is_inconsistent():
    h = H()
    a = h.send("p0", 0, 0)
    h.ack(a, 0, 7)  # the log has nothing at 7; the value is at 0
    h.drain_all(0, [a])
    only(check(h.events), inconsistent_offsets=1)


def test_consumer_read_of_another_value_at_a_stored_offset_is_inconsistent():
    h = H()
    vals = h.written("p0", 0, 3)
    ghost = h.send("p1", 0, 0)  # sent, never acknowledged, not in the final log
    h.poll("c0", 1, 0, 0, vals[0])
    h.poll("c0", 1, 0, 1, ghost)  # read at offset 1, where the log holds vals[1]
    h.poll("c0", 1, 0, 2, vals[2])
    h.drain_all(0, vals)
    only(check(h.events), inconsistent_offsets=1, vanished_reads=1)


def test_same_value_acknowledged_at_two_offsets_is_inconsistent():
    h = H()
    a = h.send("p0", 0, 0)
    h.ack(a, 0, 0)
    h.ack(a, 0, 1)
    h.drain_all(0, [a])
    report = check(h.events)
    assert report.counts["inconsistent_offsets"] >= 1, report.format()
    assert "acknowledged twice" in " ".join(report.examples["inconsistent_offsets"])


def test_going_back_within_a_consumer_session_is_non_monotonic_but_a_new_session_may():
    h = H()
    vals = h.written("p0", 0, 4)
    for o in (0, 1, 2, 1, 3):  # session 1 goes back from 2 to 1
        h.poll("c0", 1, 0, o, vals[o])
    for o in (0, 1):  # session 2 starts over: fine
        h.poll("c0", 2, 0, o, vals[o])
    for o in (0, 1):  # another consumer's session 1 is its own
        h.poll("c1", 1, 0, o, vals[o])
    h.drain_all(0, vals)
    report = check(h.events)
    only(report, non_monotonic_reads=1)
    assert report.info["sessions"] == 3


def test_skipped_offsets_within_a_session_are_reported_as_information():
    h = H()
    vals = h.written("p0", 0, 4)
    for o in (0, 3):
        h.poll("c0", 1, 0, o, vals[o])
    h.drain_all(0, vals)
    report = check(h.events)
    only(report)
    assert report.info["skipped_reads"] == 2


def test_value_nobody_sent_is_a_phantom():
    h = H()
    vals = h.written("p0", 0, 2)
    h.drain_all(0, vals + ["zz-00000001"])
    h.poll("c0", 1, 0, 2, "zz-00000001")
    only(check(h.events), phantoms=1)


def test_key_or_headers_other_than_sent_are_corrupted():
    h = H()
    vals = h.written("p0", 0, 3)
    h.drain(0, 0, vals[0])
    h.drain(0, 1, vals[1], key="another-key")
    h.drain(0, 2, vals[2], headers=[["w", "p9"]])
    h.drain_end(0, 3)
    only(check(h.events), corrupted=2)


def test_a_producers_records_stored_out_of_send_order_violate_order():
    h = H()
    a, b, c = (h.send("p0", s, 0) for s in range(3))
    for v, o in ((a, 0), (c, 1), (b, 2)):  # seq 2 stored before seq 1
        h.ack(v, 0, o)
    h.drain_all(0, [a, c, b])
    only(check(h.events), out_of_order=1)


def test_interleaving_of_two_producers_is_not_an_order_violation():
    h = H()
    order = []
    for s in range(3):
        for w in ("p1", "p0"):
            v = h.send(w, s, 0)
            h.ack(v, 0, len(order))
            order.append(v)
    h.drain_all(0, order)
    only(check(h.events))


def test_definitely_failed_write_that_shows_up_is_failed_visible():
    h = H()
    ok = h.written("p0", 0, 1)
    rejected = h.send("probe", 0, 0)
    h.fail(rejected, 0, "NOT_ENOUGH_REPLICAS", definite=True)
    timed_out = h.send("probe", 1, 0)
    h.fail(timed_out, 0, "REQUEST_TIMED_OUT")  # may have been written: allowed
    h.drain_all(0, ok + [rejected, timed_out])
    report = check(h.events)
    only(report, failed_visible=1)
    assert "NOT_ENOUGH_REPLICAS" in report.examples["failed_visible"][0]


def test_fatal_client_error_is_counted():
    h = clean_history()
    h._ev(ev="client_error", w="p0", err="OUT_OF_ORDER_SEQUENCE_NUMBER", fatal=True, reason="gave up")
    h._ev(ev="client_error", w="c0", err="_TRANSPORT", fatal=False, reason="broker down")
    report = check(h.events)
    only(report, fatal_errors=1)
    assert report.info["client_errors"] == {"OUT_OF_ORDER_SEQUENCE_NUMBER": 1, "_TRANSPORT": 1}


def test_records_below_the_log_start_are_not_lost():
    h = H()
    vals = h.written("p0", 0, 5)
    for o in range(2, 5):
        h.drain(0, o, vals[o])
    h.drain_end(0, hw=5, lo=2)
    report = check(h.events)
    only(report)
    assert report.info["below_log_start"] == 2


def test_a_value_sent_twice_makes_the_history_unusable():
    h = H()
    h.send("p0", 0, 0)
    h.send("p0", 0, 0)
    with pytest.raises(HistoryError, match="sent twice"):
        check(h.events)


def test_several_faults_are_all_counted():
    h = H()
    vals = h.written("p0", 0, 6)
    for o in (0, 1, 0):
        h.poll("c0", 1, 0, o, vals[o])
    h.drain_all(0, [vals[0], vals[1], vals[3], vals[3], vals[4]], hw=5)
    report = check(h.events)
    # vals[2] lost (the log holds vals[3] at its offset 2, which is therefore
    # inconsistent); vals[3] stored twice (at 2 and at its own 3); vals[5] beyond
    # the final hw and never read; c0 went back from 1 to 0
    only(report, lost=1, duplicates=1, inconsistent_offsets=1, unseen=1, non_monotonic_reads=1)
    text = report.format()
    for name in ("lost", "duplicates", "inconsistent offsets", "non-monotonic", "unseen"):
        assert name in text
    assert "FAIL" in text and not report.ok


def test_files_written_by_recorders_are_checked_and_a_torn_last_line_is_skipped(tmp_path):
    prod, cons, drain = tmp_path / "p0.jsonl", tmp_path / "c0.jsonl", tmp_path / "drain.jsonl"
    with Recorder(prod, "p0") as r:
        for s in range(3):
            v = f"p0-{s:08d}"
            r.write("send", s=s, topic=T, p=0, k=b"k", v=v, h=history.headers_json([("w", b"p0")]))
            r.write("ack", s=s, v=v, topic=T, p=0, o=s)
    with Recorder(cons, "c0") as r:
        r.write("session", sess=1, topic=T, parts={"0": -2})
        for s in range(3):
            r.write("poll", sess=1, topic=T, p=0, o=s, k="k", v=f"p0-{s:08d}", h=[["w", "p0"]])
    with Recorder(drain, "drain") as r:
        for s in range(3):
            r.write("drain", topic=T, p=0, o=s, k="k", v=f"p0-{s:08d}", h=[["w", "p0"]])
        r.write("drain_end", topic=T, p=0, lo=0, hw=3, next=3, complete=True)
    with open(cons, "a") as f:
        f.write('{"ev": "poll", "w": "c0", "se')  # cut short by a crash
    report = check([prod, cons, drain])
    only(report)
    assert report.info["bad_lines"] == 1 and report.info["polls"] == 3
    line = json.loads(prod.read_text().splitlines()[0])
    assert line["k"] == "k" and line["h"] == [["w", "p0"]] and "t" in line


def test_text_keeps_undecodable_bytes_distinct():
    assert history.text(b"\xff\xfe") != history.text(b"??")
    assert history.text(None) is None and history.text(b"abc") == "abc"


def test_command_line_exit_code(tmp_path, capsys):
    good = tmp_path / "good.jsonl"
    good.write_text("\n".join(json.dumps(e) for e in clean_history().events) + "\n")
    assert history.main([str(good)]) == 0
    h = clean_history()
    h.events = [e for e in h.events if not (e["ev"] == "drain" and e["o"] == 0 and e["p"] == 0)]
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join(json.dumps(e) for e in h.events) + "\n")
    assert history.main([str(bad)]) == 1
    assert "acknowledged writes lost" in capsys.readouterr().out


def test_failover_time_is_kill_to_first_ack_of_a_later_send():
    h = H()
    h.clock = 100.0
    before = h.send("p0", 0, 0)  # sent before the kill, acknowledged after it: not counted
    h.events.append({"ev": "fault", "action": "kill", "broker": 2, "topic": T, "p": 0, "t": 100.5})
    h.clock = 101.0
    after = h.send("p0", 1, 0)
    other = h.send("p0", 2, 1)  # another partition: not counted
    h.clock = 101.9
    h.ack(before, 0, 0)
    h.ack(other, 1, 0)
    h.clock = 102.99
    h.ack(after, 0, 1)  # t = 103.0
    h.events.append({"ev": "fault", "action": "kill", "broker": 3, "topic": T, "p": 1, "t": 200.0})
    times = failover_times(h.events)
    assert [t["broker"] for t in times] == [2, 3]
    assert times[0]["seconds"] == pytest.approx(2.5)
    assert times[1]["seconds"] is None  # nothing acknowledged on partition 1 after t=200


def test_percentile_is_nearest_rank():
    vals = [float(i) for i in range(1, 101)]
    assert percentile(vals, 50) == 50.0
    assert percentile(vals, 99) == 99.0
    assert percentile([3.0], 99) == 3.0
    assert percentile([], 50) is None

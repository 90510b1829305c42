//! The chaos history checker (`tests/common/history.rs`) must catch what it is there to catch:
//! each test below breaks a good history in one way and expects the violation named; the good
//! history, and the outcomes a crash may leave (an unacknowledged record stored or not, an
//! unacknowledged commit taking effect or not), pass. The tests named `exactly_once_*` do the
//! same for the idempotent producer's history (`OnceHistory`, `check_exactly_once`).

#![allow(clippy::unwrap_used)] // a test: a failed unwrap is a failed test

mod common;

use common::history::{
    Ack, Commit, GroupEvent, History, OnceHistory, Restart, Session, redeliveries,
};

fn v(s: &str) -> Vec<u8> {
    s.as_bytes().to_vec()
}

fn ack(offset: u64, value: &str) -> Ack {
    Ack {
        topic: "t".into(),
        partition: 0,
        offset,
        value: v(value),
    }
}

fn commit(round: usize, offset: u64, acknowledged: bool) -> Commit {
    Commit {
        round,
        group: "g".into(),
        topic: "t".into(),
        partition: 0,
        offset,
        acknowledged,
    }
}

fn restart(round: usize, offset: Option<u64>) -> Restart {
    Restart {
        round,
        group: "g".into(),
        topic: "t".into(),
        partition: 0,
        offset,
    }
}

fn session(round: usize, start: u64, seen: &[(u64, &str)]) -> Session {
    Session {
        consumer: 0,
        round,
        group: "g".into(),
        topic: "t".into(),
        starts: [(0, start)].into(),
        seen: seen.iter().map(|&(o, s)| (0, o, v(s))).collect(),
    }
}

/// One partition `t/0` holding a, b, c; "d" was sent and never stored, "b" stored without an
/// acknowledgement; one consumer of group `g` read a, b in round 0, committed 2, and after the
/// restart resumed at 2 and read c.
fn good_history() -> History {
    History {
        produced: ["a", "b", "c", "d"].iter().map(|s| v(s)).collect(),
        acked: vec![ack(0, "a"), ack(2, "c")],
        commits: vec![commit(0, 2, true)],
        restarts: vec![restart(0, None), restart(1, Some(2))],
        sessions: vec![
            session(0, 0, &[(0, "a"), (1, "b")]),
            session(1, 2, &[(2, "c")]),
        ],
        consumers: vec![("t".into(), vec![0])],
        stored: [(
            ("t".to_string(), 0),
            vec![(0, v("a")), (1, v("b")), (2, v("c"))],
        )]
        .into(),
    }
}

fn stored(h: &mut History) -> &mut Vec<(u64, Vec<u8>)> {
    h.stored.get_mut(&("t".into(), 0)).unwrap()
}

/// The violations of `h`; asserts one of them contains every one of `parts`.
fn assert_caught(h: &History, parts: &[&str]) {
    let bad = h.check();
    assert!(
        bad.iter().any(|e| parts.iter().all(|p| e.contains(p))),
        "no violation with {parts:?} in {bad:#?}"
    );
}

#[test]
fn the_checker_passes_a_good_history() {
    assert_eq!(good_history().check(), Vec::<String>::new());
}

#[test]
fn the_checker_passes_an_unacknowledged_commit_that_took_effect_or_did_not() {
    // Round 0 read on to c and tried to commit 3: not acknowledged before the kill.
    for (committed, start, seen) in [(3, 3, vec![]), (2, 2, vec![(2, "c")])] {
        let mut h = good_history();
        h.sessions[0] = session(0, 0, &[(0, "a"), (1, "b"), (2, "c")]);
        h.commits.push(commit(0, 3, false));
        h.restarts[1] = restart(1, Some(committed));
        h.sessions[1] = session(1, start, &seen);
        assert_eq!(h.check(), Vec::<String>::new(), "committed {committed}");
    }
}

#[test]
fn the_checker_catches_a_lost_acknowledged_record() {
    let mut h = good_history();
    stored(&mut h).truncate(2);
    h.sessions[1].seen.clear();
    assert_caught(&h, &["acknowledged t/0@2", "is lost"]);
}

#[test]
fn the_checker_catches_an_acknowledged_record_at_another_offset() {
    let mut h = good_history();
    // Reordered: c stored before b.
    *stored(&mut h) = vec![(0, v("a")), (1, v("c")), (2, v("b"))];
    h.sessions = vec![
        session(0, 0, &[(0, "a"), (1, "c")]),
        session(1, 2, &[(2, "b")]),
    ];
    assert_caught(&h, &["acknowledged t/0@2", "is lost", "holds Some(\"b\")"]);
}

#[test]
fn the_checker_catches_a_gap_in_the_offsets() {
    let mut h = good_history();
    stored(&mut h)[2].0 = 3;
    assert_caught(&h, &["offset 3 at position 2", "a gap"]);
}

#[test]
fn the_checker_catches_an_offset_stored_twice() {
    let mut h = good_history();
    stored(&mut h).insert(2, (1, v("d")));
    assert_caught(&h, &["offset 1 at position 2", "a repeat"]);
}

#[test]
fn the_checker_catches_a_value_stored_twice() {
    let mut h = good_history();
    stored(&mut h).push((3, v("a")));
    assert_caught(&h, &["\"a\" is stored twice", "t/0@0", "t/0@3"]);
}

#[test]
fn the_checker_catches_a_value_never_produced() {
    let mut h = good_history();
    stored(&mut h).push((3, v("x")));
    assert_caught(&h, &["t/0@3", "\"x\" was never produced"]);
}

#[test]
fn the_checker_catches_an_offset_acknowledged_twice() {
    let mut h = good_history();
    h.acked.push(ack(0, "b"));
    assert_caught(&h, &["t/0@0 was acknowledged twice", "\"a\" and \"b\""]);
}

#[test]
fn the_checker_catches_a_value_acknowledged_twice() {
    let mut h = good_history();
    h.acked.push(ack(1, "a"));
    assert_caught(&h, &["\"a\" was acknowledged twice"]);
}

#[test]
fn the_checker_catches_a_committed_offset_below_the_acknowledged_commit() {
    let mut h = good_history();
    h.restarts[1].offset = Some(1);
    assert_caught(
        &h,
        &[
            "committed offset Some(1) at round 1",
            "below the acknowledged",
        ],
    );
}

#[test]
fn the_checker_catches_a_committed_offset_going_back_across_restarts() {
    let mut h = good_history();
    h.restarts.push(restart(2, None));
    assert_caught(&h, &["went back from Some(2) to None at round 2"]);
}

#[test]
fn the_checker_catches_a_committed_offset_never_committed() {
    let mut h = good_history();
    h.restarts[1].offset = Some(3);
    h.sessions[1] = session(1, 3, &[]);
    assert_caught(
        &h,
        &["committed offset Some(3) at round 1 was never committed"],
    );
}

#[test]
fn the_checker_catches_an_acknowledged_commit_going_back_in_a_round() {
    let mut h = good_history();
    h.commits.push(commit(0, 1, true));
    assert_caught(
        &h,
        &["an acknowledged commit of 1 follows one of 2 in round 0"],
    );
}

#[test]
fn the_checker_catches_a_consumer_that_does_not_resume_at_its_commit() {
    let mut h = good_history();
    h.sessions[1] = session(1, 0, &[(0, "a")]);
    assert_caught(&h, &["started at 0", "committed offset was 2"]);
}

#[test]
fn the_checker_catches_a_consumer_that_skips_a_record_in_a_session() {
    let mut h = good_history();
    h.sessions[0] = session(0, 0, &[(0, "a"), (2, "c")]);
    assert_caught(&h, &["got offset 2, expected 1"]);
}

#[test]
fn the_checker_catches_a_consumer_that_gets_records_out_of_order() {
    let mut h = good_history();
    h.sessions[0] = session(0, 0, &[(1, "b"), (0, "a")]);
    assert_caught(&h, &["got offset 1, expected 0"]);
}

#[test]
fn the_checker_catches_a_consumer_that_sees_a_record_not_as_stored() {
    let mut h = good_history();
    h.sessions[0] = session(0, 0, &[(0, "a"), (1, "d")]);
    assert_caught(&h, &["saw \"d\" at t/0@1, which holds Some(\"b\")"]);
}

#[test]
fn the_checker_catches_a_consumer_that_never_sees_a_record() {
    let mut h = good_history();
    h.sessions[0].seen.pop();
    assert_caught(&h, &["never saw t/0@1", "ends at 3"]);
}

// The idempotent producer's history.

fn ack_at(partition: u32, offset: u64, value: &str) -> Ack {
    Ack {
        partition,
        ..ack(offset, value)
    }
}

fn seen(consumer: usize, partition: u32, offset: u64, value: &str) -> GroupEvent {
    GroupEvent::Seen {
        consumer,
        partition,
        offset,
        value: v(value),
    }
}

fn committed(consumer: usize, partition: u32, offset: u64) -> GroupEvent {
    GroupEvent::Committed {
        consumer,
        partition,
        offset,
    }
}

/// Keys `a` (records a0, a1, a2) and `b` (b0, b1), sent interleaved, stored in `t/0` and `t/1`
/// in their order and acknowledged there. Consumer 0 read a0 and a1 and committed 1 (a0 only);
/// it crashed, and consumer 1 read a1 again (within the uncommitted window), a2, and b0, b1.
fn good_once() -> OnceHistory {
    OnceHistory {
        topic: "t".into(),
        sent: [
            ("a", "a0"),
            ("b", "b0"),
            ("a", "a1"),
            ("b", "b1"),
            ("a", "a2"),
        ]
        .iter()
        .map(|(k, x)| (v(k), v(x)))
        .collect(),
        acked: vec![
            ack_at(0, 0, "a0"),
            ack_at(1, 0, "b0"),
            ack_at(0, 1, "a1"),
            ack_at(1, 1, "b1"),
            ack_at(0, 2, "a2"),
        ],
        group: vec![
            seen(0, 0, 0, "a0"),
            seen(0, 0, 1, "a1"),
            committed(0, 0, 1),
            seen(1, 0, 1, "a1"),
            seen(1, 0, 2, "a2"),
            committed(1, 0, 3),
            seen(1, 1, 0, "b0"),
            seen(1, 1, 1, "b1"),
            committed(1, 1, 2),
        ],
        stored: [
            (0, vec![(0, v("a0")), (1, v("a1")), (2, v("a2"))]),
            (1, vec![(0, v("b0")), (1, v("b1"))]),
        ]
        .into(),
        gaps: false,
    }
}

/// [`good_once`] as a replicated partition stores it: `t/0` with a control batch at offset 1
/// (a new leader's blank entry) that no reader sees, so its records sit at 0, 2 and 3.
fn good_once_with_gaps() -> OnceHistory {
    let mut h = good_once();
    h.gaps = true;
    let moved = |o: u64| if o == 0 { 0 } else { o + 1 };
    h.stored
        .insert(0, vec![(0, v("a0")), (2, v("a1")), (3, v("a2"))]);
    for a in &mut h.acked {
        if a.partition == 0 {
            a.offset = moved(a.offset);
        }
    }
    for e in &mut h.group {
        match e {
            GroupEvent::Seen {
                partition: 0,
                offset,
                ..
            }
            | GroupEvent::Committed {
                partition: 0,
                offset,
                ..
            } => *offset = moved(*offset),
            _ => {}
        }
    }
    h
}

/// The violations of `h`; asserts one of them contains every one of `parts`.
fn assert_caught_once(h: &OnceHistory, parts: &[&str]) {
    let bad = h.check();
    assert!(
        bad.iter().any(|e| parts.iter().all(|p| e.contains(p))),
        "no violation with {parts:?} in {bad:#?}"
    );
}

#[test]
fn exactly_once_passes_a_good_history_with_a_redelivery_in_the_uncommitted_window() {
    let h = good_once();
    assert_eq!(h.check(), Vec::<String>::new());
    assert_eq!(redeliveries(&h), 1);
}

#[test]
fn exactly_once_with_gaps_passes_offsets_that_skip_and_catches_one_that_repeats() {
    let h = good_once_with_gaps();
    assert_eq!(h.check(), Vec::<String>::new());
    // Without `gaps` the skip is a violation.
    let mut strict = good_once_with_gaps();
    strict.gaps = false;
    assert_caught_once(
        &strict,
        &["t/0: offset 2 at position 1", "a gap or a repeat"],
    );
    // With it, an offset that does not rise still is.
    let mut repeat = good_once_with_gaps();
    repeat.stored.get_mut(&0).unwrap()[2].0 = 2;
    assert_caught_once(
        &repeat,
        &["t/0: offset 2 at position 2", "a gap or a repeat"],
    );
}

#[test]
fn exactly_once_catches_a_value_stored_twice() {
    let mut h = good_once();
    // A retry appended a second time.
    h.stored.get_mut(&0).unwrap().push((3, v("a2")));
    h.group.push(seen(1, 0, 3, "a2"));
    assert_caught_once(&h, &["\"a2\" is stored twice", "t/0@2", "t/0@3"]);
}

#[test]
fn exactly_once_catches_a_sent_record_that_is_not_stored() {
    let mut h = good_once();
    h.stored.get_mut(&1).unwrap().pop();
    h.acked.retain(|a| a.value != v("b1"));
    h.group
        .retain(|e| !matches!(e, GroupEvent::Seen { value, .. } if *value == v("b1")));
    assert_caught_once(&h, &["1 sent records are not stored", "\"b1\""]);
}

#[test]
fn exactly_once_catches_a_value_never_sent() {
    let mut h = good_once();
    h.stored.get_mut(&1).unwrap().push((2, v("x")));
    h.group.push(seen(1, 1, 2, "x"));
    assert_caught_once(&h, &["t/1@2", "\"x\" was never sent"]);
}

#[test]
fn exactly_once_catches_a_gap_in_the_offsets() {
    let mut h = good_once();
    h.stored.get_mut(&1).unwrap()[1].0 = 2;
    assert_caught_once(&h, &["t/1: offset 2 at position 1", "a gap"]);
}

#[test]
fn exactly_once_catches_a_key_stored_out_of_order() {
    let mut h = good_once();
    // a2 was appended before a1 (say, a retried a1 after it), each acknowledged where it is.
    *h.stored.get_mut(&0).unwrap() = vec![(0, v("a0")), (1, v("a2")), (2, v("a1"))];
    h.acked = vec![
        ack_at(0, 0, "a0"),
        ack_at(1, 0, "b0"),
        ack_at(0, 2, "a1"),
        ack_at(1, 1, "b1"),
        ack_at(0, 1, "a2"),
    ];
    h.group = vec![
        seen(0, 0, 0, "a0"),
        seen(0, 0, 1, "a2"),
        seen(0, 0, 2, "a1"),
        seen(0, 1, 0, "b0"),
        seen(0, 1, 1, "b1"),
    ];
    assert_caught_once(
        &h,
        &[
            "key \"a\": \"a2\" is stored at t/0@1",
            "not after \"a1\" (sent before it) at t/0@2",
        ],
    );
}

#[test]
fn exactly_once_catches_a_key_split_over_partitions() {
    let mut h = good_once();
    // b1 landed in a's partition.
    h.stored.get_mut(&1).unwrap().pop();
    h.stored.get_mut(&0).unwrap().push((3, v("b1")));
    h.acked[3] = ack_at(0, 3, "b1");
    h.group
        .retain(|e| !matches!(e, GroupEvent::Seen { value, .. } if *value == v("b1")));
    h.group.push(seen(1, 0, 3, "b1"));
    assert_caught_once(
        &h,
        &[
            "key \"b\": \"b1\" is stored at t/0@3",
            "\"b0\" (sent before it) at t/1@0",
        ],
    );
}

#[test]
fn exactly_once_catches_an_acknowledged_offset_holding_another_value() {
    let mut h = good_once();
    // The retry was answered with offsets that are not the first append's.
    h.acked[2] = ack_at(0, 2, "a1");
    assert_caught_once(
        &h,
        &[
            "acknowledged t/0@2 = \"a1\"",
            "the partition holds Some(\"a2\")",
        ],
    );
}

#[test]
fn exactly_once_catches_a_value_acknowledged_twice_and_one_never() {
    let mut h = good_once();
    h.acked[4] = ack_at(0, 1, "a1");
    let bad = h.check();
    assert!(
        bad.iter()
            .any(|e| e.contains("\"a1\" was acknowledged twice")),
        "{bad:#?}"
    );
    assert!(
        bad.iter()
            .any(|e| e.contains("1 sent records were never acknowledged")),
        "{bad:#?}"
    );
}

#[test]
fn exactly_once_catches_a_record_the_group_never_saw() {
    let mut h = good_once();
    h.group
        .retain(|e| !matches!(e, GroupEvent::Seen { value, .. } if *value == v("a2")));
    assert_caught_once(
        &h,
        &[
            "the group never saw t/0@2",
            "1 of the partition's 3 records unseen",
        ],
    );
}

#[test]
fn exactly_once_catches_a_record_seen_not_as_stored() {
    let mut h = good_once();
    h.group[6] = seen(1, 1, 0, "b1");
    assert_caught_once(
        &h,
        &["consumer 1 saw \"b1\" at t/1@0, which holds Some(\"b0\")"],
    );
}

#[test]
fn exactly_once_catches_a_redelivery_outside_the_uncommitted_window() {
    let mut h = good_once();
    // Consumer 0 committed past a1 (acknowledged) before it crashed: reading a1 again is not
    // within the window any more.
    h.group[2] = committed(0, 0, 2);
    assert_caught_once(
        &h,
        &[
            "consumer 1 saw t/0@1 again after consumer 0's acknowledged commit of 2",
            "outside the uncommitted window",
        ],
    );
}

#[test]
fn exactly_once_catches_a_zombie_reading_after_the_new_owners_commit() {
    let mut h = good_once();
    // Consumer 0 goes on reading a1 after consumer 1 read it, and a2, and committed 3.
    h.group.insert(6, seen(0, 0, 2, "a2"));
    assert_caught_once(
        &h,
        &["consumer 0 saw t/0@2 again after consumer 1's acknowledged commit of 3"],
    );
}

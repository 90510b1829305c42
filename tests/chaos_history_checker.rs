//! The chaos history checker (`tests/common/history.rs`) must catch what it is there to catch:
//! each test below breaks a good history in one way and expects the violation named; the good
//! history, and the outcomes a crash may leave (an unacknowledged record stored or not, an
//! unacknowledged commit taking effect or not), pass.

#![allow(clippy::unwrap_used)] // a test: a failed unwrap is a failed test

mod common;

use common::history::{Ack, Commit, History, Restart, Session};

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

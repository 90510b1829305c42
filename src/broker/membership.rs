//! Consumer-group membership with broker-side assignment, after Kafka's KIP-848: no
//! stop-the-world rebalance, members converge on a target one partition at a time.
//!
//! The protocol, as one member sees it:
//!
//! 1. **Join**: a heartbeat with epoch 0, the topics it follows and the partitions it holds
//!    (none, or those it held before the broker restarted). The broker gives it a member id and
//!    an epoch, and bumps the group epoch, which recomputes the group's *target* assignment
//!    (`assignor.rs`).
//! 2. **Assign**: every answer carries what the member may own now: its target partitions that
//!    no other member still holds. A partition another member holds is handed over only once
//!    that member has let it go, so no partition is ever owned by two members. A member still
//!    waiting for some is told to heartbeat ten times as often until it has them.
//! 3. **Revoke**: an answer without a partition the member holds asks it to let it go. The
//!    member commits its position there, stops reading it, and heartbeats at once with the
//!    smaller set; only then is the partition free for its new owner. The member's epoch does
//!    not move on a revocation, so its last commit is still accepted.
//! 4. **Fence**: a commit names the member and its epoch and is accepted only for partitions
//!    the member owns (or is being handed) at that epoch. A member whose session timed out, who
//!    left, or whose epoch is old is refused with the group, member and epoch named.
//!
//! A member that sends no heartbeat within the session timeout is presumed dead and its
//! partitions go to the others. A static member (with an instance id, Kafka's
//! `group.instance.id`) that leaves with epoch -2 keeps its partitions, unowned, until its
//! session times out; if it rejoins before, it gets them back and nothing moves.
//!
//! Membership lives in memory only: after a restart members rejoin within a heartbeat, naming
//! the partitions they hold. Once one member of a group has rejoined so, for the rest of a grace
//! period after the start (one session timeout) the broker hands out no partition of that group
//! that nobody claims, so that members still on their way back find theirs where they left
//! them. A group whose members all join afresh is assigned at once. Committed offsets are as durable as ever (`groups.rs`).

use super::assignor::{Assignment, Assignor};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// Epoch in a join heartbeat.
pub const JOIN_EPOCH: i64 = 0;
/// Epoch in a heartbeat that leaves the group.
pub const LEAVE_EPOCH: i64 = -1;
/// Epoch in a heartbeat of a static member that leaves for a moment (a restart): it keeps its
/// partitions until its session times out.
pub const STATIC_LEAVE_EPOCH: i64 = -2;

/// The broker's group timing settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupTimings {
    /// How often members heartbeat (told to them in every answer).
    pub heartbeat_interval: Duration,
    /// A member silent this long is presumed dead and its partitions move.
    pub session_timeout: Duration,
}

impl Default for GroupTimings {
    fn default() -> Self {
        GroupTimings {
            heartbeat_interval: Duration::from_secs(1),
            session_timeout: Duration::from_secs(10),
        }
    }
}

/// One heartbeat, as the member sends it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Heartbeat {
    /// Empty on a join.
    pub member_id: String,
    /// [`JOIN_EPOCH`], [`LEAVE_EPOCH`], [`STATIC_LEAVE_EPOCH`], or the member's epoch.
    pub member_epoch: i64,
    /// A static member's instance id.
    pub instance_id: Option<String>,
    /// Where the member runs (the peer address the server saw).
    pub client_host: String,
    /// The topics it follows.
    pub topics: BTreeSet<String>,
    /// The assignor it asks for (the group's first member decides).
    pub assignor: Assignor,
    /// The partitions it holds now, after acting on the previous answer.
    pub owned: Assignment,
}

/// The answer to a heartbeat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeartbeatAnswer {
    /// The member's id (new on a join).
    pub member_id: String,
    /// Its epoch ([`LEAVE_EPOCH`] after a leave).
    pub member_epoch: i64,
    /// When to heartbeat next.
    pub heartbeat_interval: Duration,
    /// What it may own now; what it holds beyond this it must let go.
    pub assignment: Assignment,
    /// Partitions meant for it that another member still holds.
    pub pending: usize,
}

/// Why a heartbeat or a commit was refused. Each names the member and its epoch; the broker's
/// error adds the group.
#[allow(missing_docs)]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The group does not know the member: it never joined, left, or its session expired.
    #[error("member '{member}' is not in the group (it left, or its session expired): rejoin")]
    UnknownMember { member: String },
    /// The member's epoch is not the one the group has for it.
    #[error("member '{member}' is at epoch {current}, not {epoch}: it was fenced; rejoin")]
    StaleEpoch {
        member: String,
        epoch: i64,
        current: i64,
    },
    /// The member commits a partition it does not own.
    #[error(
        "member '{member}' at epoch {epoch} does not own topic '{topic}' partition {partition}"
    )]
    NotOwner {
        member: String,
        epoch: i64,
        topic: String,
        partition: u32,
    },
    /// A commit without membership while the group has live members.
    #[error(
        "the group has {members} live member(s): only they commit, naming their member id and \
         epoch (stop them, or wait for their sessions to expire, to commit without membership)"
    )]
    HasMembers { members: usize },
    /// Another live member already uses this instance id.
    #[error("instance id '{instance_id}' is in use by a live member")]
    InstanceInUse { instance_id: String },
}

/// A member as `describe` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberInfo {
    /// Its id.
    pub member_id: String,
    /// Its instance id, if static.
    pub instance_id: Option<String>,
    /// Where it runs.
    pub client_host: String,
    /// Its epoch.
    pub member_epoch: i64,
    /// The topics it follows.
    pub topics: BTreeSet<String>,
    /// What it may own now.
    pub assignment: Assignment,
    /// A static member that left for a moment and has not come back yet.
    pub away: bool,
}

/// A group as `describe` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupMembers {
    /// `empty` (no members), `reconciling` (some member does not own its target yet), or
    /// `stable`.
    pub state: &'static str,
    /// The group epoch.
    pub epoch: u64,
    /// The assignor.
    pub assignor: Assignor,
    /// Its members, by id.
    pub members: Vec<MemberInfo>,
}

#[derive(Debug)]
struct Member {
    instance_id: Option<String>,
    client_host: String,
    topics: BTreeSet<String>,
    epoch: i64,
    /// What it reported holding.
    owned: Assignment,
    /// What it was last told it may own.
    assigned: Assignment,
    last_heartbeat_ms: i64,
    /// A static member that left for a moment.
    away: bool,
    /// The epoch at which it was given each partition it holds: a commit must carry an epoch
    /// from this one on (a commit from an earlier ownership of the partition is stale).
    since: BTreeMap<(String, u32), i64>,
}

impl Member {
    fn holds(&self, topic: &str, partition: u32) -> bool {
        [&self.owned, &self.assigned]
            .iter()
            .any(|a| a.get(topic).is_some_and(|ps| ps.contains(&partition)))
    }
}

#[derive(Debug, Default)]
struct Group {
    /// Bumps on every change of members, subscriptions or partition counts.
    epoch: u64,
    assignor: Assignor,
    members: BTreeMap<String, Member>,
    target: BTreeMap<String, Assignment>,
    /// The partition counts the target was computed with.
    partitions: BTreeMap<String, u32>,
    /// `epoch` when the target was computed.
    target_epoch: u64,
    /// The group was live before the broker restarted: a member rejoined claiming partitions,
    /// or the group had committed offsets on disk when the broker started.
    reclaiming: bool,
}

/// Every group's membership.
#[derive(Debug)]
pub struct Membership {
    timings: GroupTimings,
    groups: BTreeMap<String, Group>,
    /// Until then, a partition nobody claims is not handed out (members rejoining after a
    /// restart reclaim theirs first).
    grace_until_ms: i64,
    next_id: u64,
    /// Makes member ids unique across restarts.
    id_prefix: String,
    /// Groups with committed offsets when the broker started: their members may be on their way
    /// back, so the restart grace holds for them from the first heartbeat, whoever sends it (a
    /// member joining afresh must not be handed partitions the old members still read).
    known_at_start: BTreeSet<String>,
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn contains(a: &Assignment, topic: &str, partition: u32) -> bool {
    a.get(topic).is_some_and(|ps| ps.contains(&partition))
}

fn pairs(a: &Assignment) -> impl Iterator<Item = (&String, u32)> {
    a.iter().flat_map(|(t, ps)| ps.iter().map(move |p| (t, *p)))
}

fn insert(a: &mut Assignment, topic: &str, partition: u32) {
    a.entry(topic.to_owned()).or_default().insert(partition);
}

impl Membership {
    /// Empty membership for a broker started at `now_ms`, which found committed offsets of
    /// `known_at_start` on disk.
    pub fn new(
        timings: GroupTimings,
        now_ms: i64,
        known_at_start: impl IntoIterator<Item = String>,
    ) -> Membership {
        Membership {
            timings,
            groups: BTreeMap::new(),
            grace_until_ms: now_ms.saturating_add(ms(timings.session_timeout)),
            next_id: 0,
            id_prefix: format!("{now_ms:x}"),
            known_at_start: known_at_start.into_iter().collect(),
        }
    }

    /// Handles one heartbeat of `group` at `now_ms`. `partitions` gives the partition count of
    /// each topic some member follows (topics that do not exist are left out).
    pub fn heartbeat(
        &mut self,
        group_name: &str,
        hb: Heartbeat,
        now_ms: i64,
        partitions: &dyn Fn(&str) -> Option<u32>,
    ) -> Result<HeartbeatAnswer, Refusal> {
        self.expire(now_ms);
        let timings = self.timings;
        let known = self.known_at_start.contains(group_name);
        let group = self
            .groups
            .entry(group_name.to_owned())
            .or_insert_with(|| Group {
                reclaiming: known,
                ..Group::default()
            });
        let member_id = match hb.member_epoch {
            JOIN_EPOCH => {
                let reclaimed = match &hb.instance_id {
                    Some(instance) => group
                        .members
                        .iter()
                        .find(|(_, m)| m.instance_id.as_ref() == Some(instance))
                        .map(|(id, m)| (id.clone(), m.away)),
                    None => None,
                };
                match reclaimed {
                    // A static member back from a restart: it takes its old place (and target)
                    // under a new id, which fences the old incarnation.
                    Some((old, true)) => {
                        self.next_id += 1;
                        let id = format!("{}-{}", self.id_prefix, self.next_id);
                        if let Some(mut m) = group.members.remove(&old) {
                            m.away = false;
                            m.epoch += 1;
                            m.owned = Assignment::new();
                            m.assigned = Assignment::new();
                            group.members.insert(id.clone(), m);
                        }
                        if let Some(t) = group.target.remove(&old) {
                            group.target.insert(id.clone(), t);
                        }
                        id
                    }
                    Some((_, false)) => {
                        return Err(Refusal::InstanceInUse {
                            instance_id: hb.instance_id.clone().unwrap_or_default(),
                        });
                    }
                    None => {
                        self.next_id += 1;
                        let id = format!("{}-{}", self.id_prefix, self.next_id);
                        if group.members.is_empty() {
                            group.assignor = hb.assignor;
                        }
                        group.reclaiming |= pairs(&hb.owned).next().is_some();
                        // What it claims to hold counts only where nobody else holds it.
                        let mut owned = Assignment::new();
                        for (t, p) in pairs(&hb.owned) {
                            if !group.members.values().any(|m| m.holds(t, p)) {
                                insert(&mut owned, t, p);
                            }
                        }
                        group.members.insert(
                            id.clone(),
                            Member {
                                instance_id: hb.instance_id.clone(),
                                client_host: hb.client_host.clone(),
                                topics: BTreeSet::new(),
                                epoch: 1,
                                owned: owned.clone(),
                                assigned: owned,
                                last_heartbeat_ms: now_ms,
                                away: false,
                                since: BTreeMap::new(),
                            },
                        );
                        group.epoch += 1;
                        id
                    }
                }
            }
            epoch => {
                let Some(m) = group.members.get_mut(&hb.member_id) else {
                    return Err(Refusal::UnknownMember {
                        member: hb.member_id,
                    });
                };
                if epoch == LEAVE_EPOCH {
                    group.members.remove(&hb.member_id);
                    group.target.remove(&hb.member_id);
                    group.epoch += 1;
                    return Ok(HeartbeatAnswer {
                        member_id: hb.member_id,
                        member_epoch: LEAVE_EPOCH,
                        heartbeat_interval: timings.heartbeat_interval,
                        assignment: Assignment::new(),
                        pending: 0,
                    });
                }
                if epoch == STATIC_LEAVE_EPOCH && m.instance_id.is_some() {
                    m.away = true;
                    m.owned = Assignment::new();
                    m.last_heartbeat_ms = now_ms;
                    return Ok(HeartbeatAnswer {
                        member_id: hb.member_id,
                        member_epoch: STATIC_LEAVE_EPOCH,
                        heartbeat_interval: timings.heartbeat_interval,
                        assignment: Assignment::new(),
                        pending: 0,
                    });
                }
                // An older epoch is a member whose last answer was lost: it gets the current
                // one (what it reports holding is checked against what it was given anyway).
                // One from the future is no answer this broker gave.
                if epoch > m.epoch || epoch < 1 {
                    return Err(Refusal::StaleEpoch {
                        member: hb.member_id,
                        epoch,
                        current: m.epoch,
                    });
                }
                // A member reports holding only what it was given.
                let mut owned = Assignment::new();
                for (t, p) in pairs(&hb.owned) {
                    if m.holds(t, p) {
                        insert(&mut owned, t, p);
                    }
                }
                m.owned = owned;
                hb.member_id.clone()
            }
        };
        let group = self
            .groups
            .get_mut(group_name)
            .ok_or_else(|| Refusal::UnknownMember {
                member: member_id.clone(),
            })?;
        if let Some(m) = group.members.get_mut(&member_id) {
            m.last_heartbeat_ms = now_ms;
            m.client_host.clone_from(&hb.client_host);
            if m.topics != hb.topics {
                m.topics = hb.topics;
                group.epoch += 1;
            }
        }
        group.retarget(partitions);
        let in_grace = now_ms < self.grace_until_ms && group.reclaiming;
        let answer = group.answer(&member_id, in_grace);
        // A member waiting for partitions another still holds asks again soon: they are freed
        // as soon as their holder's next heartbeat lets them go.
        let pending = group.target.get(&member_id).map_or(0, |t| {
            pairs(t)
                .filter(|(t, p)| !contains(&answer.1, t, *p))
                .count()
        });
        let heartbeat_interval = if pending > 0 {
            (timings.heartbeat_interval / 10).max(Duration::from_millis(10))
        } else {
            timings.heartbeat_interval
        };
        Ok(HeartbeatAnswer {
            member_id,
            member_epoch: answer.0,
            heartbeat_interval,
            assignment: answer.1,
            pending,
        })
    }

    /// Checks that `member` (at `epoch`) of `group` may commit `topic`/`partition`; `None` for a
    /// commit without membership, which only a group without live members accepts.
    pub fn check_commit(
        &mut self,
        group_name: &str,
        member: Option<(&str, i64)>,
        topic: &str,
        partition: u32,
        now_ms: i64,
    ) -> Result<(), Refusal> {
        self.expire(now_ms);
        let group = self.groups.get(group_name);
        let Some((id, epoch)) = member else {
            let live = group.map_or(0, |g| g.members.len());
            return if live == 0 {
                Ok(())
            } else {
                Err(Refusal::HasMembers { members: live })
            };
        };
        let Some(m) = group.and_then(|g| g.members.get(id)) else {
            return Err(Refusal::UnknownMember {
                member: id.to_owned(),
            });
        };
        // Any epoch since the member was given the partition: the member's own newest epoch may
        // still be on its way to the part of it that commits.
        let since = m
            .since
            .get(&(topic.to_owned(), partition))
            .copied()
            .unwrap_or(1);
        if m.holds(topic, partition) && (epoch > m.epoch || epoch < since) {
            return Err(Refusal::StaleEpoch {
                member: id.to_owned(),
                epoch,
                current: m.epoch,
            });
        }
        if !m.holds(topic, partition) {
            return Err(Refusal::NotOwner {
                member: id.to_owned(),
                epoch,
                topic: topic.to_owned(),
                partition,
            });
        }
        Ok(())
    }

    /// Removes members whose session timed out.
    pub fn expire(&mut self, now_ms: i64) {
        let timeout = ms(self.timings.session_timeout);
        for group in self.groups.values_mut() {
            let before = group.members.len();
            group
                .members
                .retain(|_, m| now_ms.saturating_sub(m.last_heartbeat_ms) < timeout);
            if group.members.len() != before {
                let members = &group.members;
                group.target.retain(|id, _| members.contains_key(id));
                group.epoch += 1;
            }
        }
        self.groups.retain(|_, g| !g.members.is_empty());
    }

    /// Groups with live members.
    pub fn groups(&self) -> Vec<String> {
        self.groups
            .iter()
            .filter(|(_, g)| !g.members.is_empty())
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// The group's members, or `None` if it has none.
    pub fn describe(&mut self, group_name: &str, now_ms: i64) -> Option<GroupMembers> {
        self.expire(now_ms);
        let group = self.groups.get(group_name)?;
        if group.members.is_empty() {
            return None;
        }
        let reconciling = group
            .members
            .iter()
            .any(|(id, m)| group.target.get(id).is_some_and(|t| *t != m.assigned));
        Some(GroupMembers {
            state: if reconciling { "reconciling" } else { "stable" },
            epoch: group.epoch,
            assignor: group.assignor,
            members: group
                .members
                .iter()
                .map(|(id, m)| MemberInfo {
                    member_id: id.clone(),
                    instance_id: m.instance_id.clone(),
                    client_host: m.client_host.clone(),
                    member_epoch: m.epoch,
                    topics: m.topics.clone(),
                    assignment: m.assigned.clone(),
                    away: m.away,
                })
                .collect(),
        })
    }
}

impl Group {
    /// Recomputes the target if members, subscriptions or partition counts changed.
    fn retarget(&mut self, partitions: &dyn Fn(&str) -> Option<u32>) {
        let topics: BTreeSet<&String> = self.members.values().flat_map(|m| &m.topics).collect();
        let counts: BTreeMap<String, u32> = topics
            .into_iter()
            .filter_map(|t| partitions(t).map(|n| (t.clone(), n)))
            .collect();
        if counts == self.partitions && self.target_epoch == self.epoch && !self.target.is_empty() {
            return;
        }
        if counts != self.partitions {
            self.epoch += 1;
        }
        let subscriptions: BTreeMap<String, BTreeSet<String>> = self
            .members
            .iter()
            .map(|(id, m)| (id.clone(), m.topics.clone()))
            .collect();
        // Stickiness starts from what members hold, then, for partitions nobody holds, from
        // the previous target.
        let mut current: BTreeMap<String, Assignment> = BTreeMap::new();
        for (id, m) in &self.members {
            let mut a = Assignment::new();
            for (t, p) in pairs(&m.owned).chain(pairs(&m.assigned)) {
                insert(&mut a, t, p);
            }
            for (t, p) in self.target.get(id).into_iter().flat_map(pairs) {
                if !self.members.values().any(|m| m.holds(t, p)) {
                    insert(&mut a, t, p);
                }
            }
            current.insert(id.clone(), a);
        }
        self.target = self.assignor.assign(&subscriptions, &counts, &current);
        self.partitions = counts;
        self.target_epoch = self.epoch;
    }

    /// What `id` may own now, and its epoch.
    fn answer(&mut self, id: &str, in_grace: bool) -> (i64, Assignment) {
        let target = self.target.get(id).cloned().unwrap_or_default();
        let Some(me) = self.members.get(id) else {
            return (LEAVE_EPOCH, Assignment::new());
        };
        let mut keep = Assignment::new();
        let mut revoking = false;
        for (t, p) in pairs(&me.owned) {
            if contains(&target, t, p) {
                insert(&mut keep, t, p);
            } else {
                revoking = true;
            }
        }
        let mut assignment = keep;
        if revoking {
            // Only partitions it was told before and still may keep; nothing new until it has
            // let go of the revoked ones.
            for (t, p) in pairs(&me.assigned) {
                if contains(&target, t, p) {
                    insert(&mut assignment, t, p);
                }
            }
        } else {
            for (t, p) in pairs(&target) {
                let held_elsewhere = self
                    .members
                    .iter()
                    .any(|(other, m)| other != id && m.holds(t, p));
                let claimed_before = contains(&me.assigned, t, p);
                if !held_elsewhere && (!in_grace || claimed_before) {
                    insert(&mut assignment, t, p);
                }
            }
        }
        let Some(me) = self.members.get_mut(id) else {
            return (LEAVE_EPOCH, Assignment::new());
        };
        let gained: Vec<(String, u32)> = pairs(&assignment)
            .filter(|(t, p)| !me.holds(t, *p))
            .map(|(t, p)| (t.clone(), p))
            .collect();
        if !gained.is_empty() {
            me.epoch += 1;
            for key in gained {
                me.since.insert(key, me.epoch);
            }
        }
        me.assigned = assignment.clone();
        (me.epoch, assignment)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::many_single_char_names)]

    use super::*;

    const TOPIC: &str = "orders";

    fn counts(t: &str) -> Option<u32> {
        (t == TOPIC).then_some(12)
    }

    fn timings() -> GroupTimings {
        GroupTimings {
            heartbeat_interval: Duration::from_millis(100),
            session_timeout: Duration::from_secs(1),
        }
    }

    /// A member's side: its id, epoch and what it holds.
    #[derive(Debug, Default, Clone)]
    struct Client {
        id: String,
        epoch: i64,
        owned: Assignment,
        instance: Option<String>,
    }

    impl Client {
        fn beat(&mut self, m: &mut Membership, now: i64) -> Result<(), Refusal> {
            let hb = Heartbeat {
                member_id: self.id.clone(),
                member_epoch: self.epoch,
                instance_id: self.instance.clone(),
                client_host: "127.0.0.1".into(),
                topics: [TOPIC.to_string()].into(),
                assignor: Assignor::Uniform,
                owned: self.owned.clone(),
            };
            let a = m.heartbeat("g", hb, now, &counts)?;
            self.id = a.member_id;
            self.epoch = a.member_epoch;
            // Reconcile at once: let go of what is not in the answer, take what is; having let
            // go of some, say so at once (as the real consumer does).
            let revoked = pairs(&self.owned).any(|(t, p)| !contains(&a.assignment, t, p));
            self.owned = a.assignment;
            if revoked {
                self.beat(m, now)?;
            }
            Ok(())
        }

        fn count(&self) -> usize {
            self.owned.values().map(BTreeSet::len).sum()
        }
    }

    /// No partition is owned by two clients.
    fn disjoint(clients: &[&Client]) {
        let mut seen = BTreeSet::new();
        for c in clients {
            for (t, p) in pairs(&c.owned) {
                assert!(
                    seen.insert((t.clone(), p)),
                    "{t}/{p} owned twice: {clients:?}"
                );
            }
        }
    }

    /// Heartbeats everyone `rounds` times, checking ownership stays disjoint.
    fn settle(m: &mut Membership, clients: &mut [Client], now: &mut i64, rounds: usize) {
        for _ in 0..rounds {
            *now += 100;
            for i in 0..clients.len() {
                clients[i].beat(m, *now).unwrap();
                disjoint(&clients.iter().collect::<Vec<_>>());
            }
        }
    }

    fn started() -> (Membership, i64) {
        // Past the restart grace.
        (Membership::new(timings(), 0, []), 5_000)
    }

    #[test]
    fn three_members_share_twelve_partitions_and_a_fourth_takes_three() {
        let (mut m, mut now) = started();
        let mut cs = vec![Client::default(), Client::default(), Client::default()];
        settle(&mut m, &mut cs, &mut now, 3);
        assert_eq!(cs.iter().map(Client::count).collect::<Vec<_>>(), [4, 4, 4]);
        assert_eq!(m.describe("g", now).unwrap().state, "stable");

        let before: Vec<Assignment> = cs.iter().map(|c| c.owned.clone()).collect();
        cs.push(Client::default());
        // Within two heartbeat rounds every partition is owned again.
        settle(&mut m, &mut cs, &mut now, 2);
        assert_eq!(
            cs.iter().map(Client::count).collect::<Vec<_>>(),
            [3, 3, 3, 3]
        );
        for (c, b) in cs.iter().zip(&before) {
            for (t, p) in pairs(&c.owned) {
                assert!(contains(b, t, p), "a staying member gained {t}/{p}");
            }
        }
    }

    #[test]
    fn a_member_waiting_for_partitions_is_told_to_ask_again_soon() {
        let (mut m, now) = started();
        let mut a = Client::default();
        a.beat(&mut m, now).unwrap();
        let hb = Heartbeat {
            topics: [TOPIC.to_string()].into(),
            ..Heartbeat::default()
        };
        // b's partitions are still a's: b is to come back at a tenth of the interval.
        let b = m.heartbeat("g", hb, now, &counts).unwrap();
        assert!(b.assignment.is_empty());
        assert_eq!(b.pending, 6);
        assert_eq!(b.heartbeat_interval, Duration::from_millis(10));
        let hb = Heartbeat {
            member_id: a.id.clone(),
            member_epoch: a.epoch,
            topics: [TOPIC.to_string()].into(),
            owned: a.owned.clone(),
            ..Heartbeat::default()
        };
        // a has all it is meant to have: the full interval.
        let a_answer = m.heartbeat("g", hb, now, &counts).unwrap();
        assert_eq!(a_answer.heartbeat_interval, Duration::from_millis(100));
        assert_eq!(a_answer.pending, 0);
    }

    #[test]
    fn a_member_whose_answer_was_lost_goes_on_at_the_current_epoch() {
        let (mut m, now) = started();
        let mut a = Client::default();
        a.beat(&mut m, now).unwrap();
        assert_eq!(a.count(), 12);
        // It never heard the answer that gave it its partitions (epoch 2): it beats at epoch 1.
        let mut lost = a.clone();
        lost.epoch = 1;
        lost.owned = Assignment::new();
        lost.beat(&mut m, now).unwrap();
        assert_eq!(lost.epoch, a.epoch);
        assert_eq!(lost.count(), 12);
        // An epoch no answer gave is refused.
        let mut forged = a.clone();
        forged.epoch += 5;
        assert!(matches!(
            forged.beat(&mut m, now),
            Err(Refusal::StaleEpoch { .. })
        ));
    }

    #[test]
    fn a_silent_member_is_expired_and_its_partitions_move() {
        let (mut m, mut now) = started();
        let mut cs = vec![Client::default(), Client::default()];
        settle(&mut m, &mut cs, &mut now, 3);
        let mut dead = cs.pop().unwrap();
        for _ in 0..11 {
            now += 100;
            cs[0].beat(&mut m, now).unwrap();
        }
        assert_eq!(cs[0].count(), 12);
        assert_eq!(
            dead.beat(&mut m, now),
            Err(Refusal::UnknownMember {
                member: dead.id.clone()
            })
        );
    }

    #[test]
    fn commits_are_fenced_by_member_epoch_and_ownership() {
        let (mut m, mut now) = started();
        let mut cs = vec![Client::default(), Client::default()];
        settle(&mut m, &mut cs, &mut now, 3);
        let (a, b) = (&cs[0], &cs[1]);
        let (t, p) = pairs(&a.owned).next().map(|(t, p)| (t.clone(), p)).unwrap();
        assert_eq!(
            m.check_commit("g", Some((&a.id, a.epoch)), &t, p, now),
            Ok(())
        );
        assert_eq!(
            m.check_commit("g", Some((&b.id, b.epoch)), &t, p, now),
            Err(Refusal::NotOwner {
                member: b.id.clone(),
                epoch: b.epoch,
                topic: t.clone(),
                partition: p
            })
        );
        assert!(matches!(
            m.check_commit("g", Some((&a.id, a.epoch - 1)), &t, p, now),
            Err(Refusal::StaleEpoch { .. })
        ));
        assert_eq!(
            m.check_commit("g", None, &t, p, now),
            Err(Refusal::HasMembers { members: 2 })
        );
        assert_eq!(m.check_commit("other", None, &t, p, now), Ok(()));
    }

    #[test]
    fn a_revoking_member_may_commit_what_it_lets_go_at_its_epoch() {
        let (mut m, mut now) = started();
        let mut a = Client::default();
        a.beat(&mut m, now).unwrap();
        assert_eq!(a.count(), 12);
        let mut b = Client::default();
        now += 100;
        b.beat(&mut m, now).unwrap();
        assert_eq!(b.count(), 0, "nothing is free until the holder lets go");
        // a's answer revokes six; before it acts on it, it may commit them.
        let hb = Heartbeat {
            member_id: a.id.clone(),
            member_epoch: a.epoch,
            topics: [TOPIC.to_string()].into(),
            owned: a.owned.clone(),
            ..Heartbeat::default()
        };
        let answer = m.heartbeat("g", hb, now, &counts).unwrap();
        assert_eq!(answer.member_epoch, a.epoch, "a revocation keeps the epoch");
        let revoked: Vec<(String, u32)> = pairs(&a.owned)
            .filter(|(t, p)| !contains(&answer.assignment, t, *p))
            .map(|(t, p)| (t.clone(), p))
            .collect();
        assert_eq!(revoked.len(), 6);
        for (t, p) in &revoked {
            assert_eq!(
                m.check_commit("g", Some((&a.id, a.epoch)), t, *p, now),
                Ok(())
            );
        }
        a.owned = answer.assignment;
        a.beat(&mut m, now).unwrap();
        b.beat(&mut m, now).unwrap();
        assert_eq!((a.count(), b.count()), (6, 6));
        for (t, p) in &revoked {
            assert!(
                m.check_commit("g", Some((&a.id, a.epoch)), t, *p, now)
                    .is_err()
            );
        }
    }

    #[test]
    fn a_static_member_that_comes_back_in_time_gets_its_partitions_back() {
        let (mut m, mut now) = started();
        let mut cs = vec![
            Client {
                instance: Some("billing-1".into()),
                ..Client::default()
            },
            Client::default(),
        ];
        settle(&mut m, &mut cs, &mut now, 3);
        let held = cs[0].owned.clone();
        // It leaves for a restart.
        let hb = Heartbeat {
            member_id: cs[0].id.clone(),
            member_epoch: STATIC_LEAVE_EPOCH,
            instance_id: cs[0].instance.clone(),
            topics: [TOPIC.to_string()].into(),
            ..Heartbeat::default()
        };
        m.heartbeat("g", hb, now, &counts).unwrap();
        // The other member is not handed its partitions meanwhile.
        now += 300;
        cs[1].beat(&mut m, now).unwrap();
        assert_eq!(cs[1].count(), 6);
        let mut back = Client {
            instance: Some("billing-1".into()),
            ..Client::default()
        };
        back.beat(&mut m, now).unwrap();
        assert_eq!(back.owned, held);
        // The old incarnation is fenced.
        let mut old = cs[0].clone();
        old.epoch = cs[0].epoch;
        assert!(old.beat(&mut m, now).is_err());
    }

    #[test]
    fn a_fresh_group_is_assigned_at_once_even_right_after_the_broker_started() {
        let mut m = Membership::new(timings(), 0, []);
        // An empty entry for the topic claims nothing: no reason to wait for anyone.
        let mut c = Client {
            owned: [(TOPIC.to_string(), BTreeSet::new())].into(),
            ..Client::default()
        };
        c.beat(&mut m, 10).unwrap();
        assert_eq!(c.count(), 12);
    }

    #[test]
    fn after_a_restart_members_reclaim_what_they_held() {
        let mut m = Membership::new(timings(), 0, []);
        let mut now = 10;
        let held: Vec<Assignment> = (0..3u32)
            .map(|i| [(TOPIC.to_string(), (i * 4..i * 4 + 4).collect())].into())
            .collect();
        let mut cs: Vec<Client> = held
            .iter()
            .map(|h| Client {
                owned: h.clone(),
                ..Client::default()
            })
            .collect();
        // The first to rejoin does not get the others' partitions during the grace period.
        cs[0].beat(&mut m, now).unwrap();
        assert_eq!(cs[0].owned, held[0]);
        now += 50;
        cs[1].beat(&mut m, now).unwrap();
        cs[2].beat(&mut m, now).unwrap();
        settle(&mut m, &mut cs, &mut now, 2);
        for (c, h) in cs.iter().zip(&held) {
            assert_eq!(&c.owned, h);
        }
    }

    #[test]
    fn a_leave_frees_partitions_at_once() {
        let (mut m, mut now) = started();
        let mut cs = vec![Client::default(), Client::default()];
        settle(&mut m, &mut cs, &mut now, 3);
        let hb = Heartbeat {
            member_id: cs[1].id.clone(),
            member_epoch: LEAVE_EPOCH,
            ..Heartbeat::default()
        };
        m.heartbeat("g", hb, now, &counts).unwrap();
        cs.pop();
        settle(&mut m, &mut cs, &mut now, 1);
        assert_eq!(cs[0].count(), 12);
        assert_eq!(m.describe("g", now).unwrap().members.len(), 1);
    }
}

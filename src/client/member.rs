//! A consumer's membership in its group: a background task that heartbeats (see the broker's
//! `membership.rs` for the protocol) and tells the [`super::Consumer`] when its assignment
//! changes. The consumer reconciles (commits and lets go of revoked partitions, takes new ones)
//! and reports what it holds; the task says so to the broker at once when it let go of some.

use super::{Channel, ClientError, raw};
use crate::proto::{self, strata_client::StrataClient};
use std::{
    collections::BTreeSet,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::Duration,
};
use tokio::sync::{Notify, watch};
use tonic::Code;

/// Epochs of the protocol (as the broker's).
const JOIN_EPOCH: i64 = 0;
const LEAVE_EPOCH: i64 = -1;
const STATIC_LEAVE_EPOCH: i64 = -2;

/// How long to wait before retrying a heartbeat the broker did not answer.
const RETRY_BACKOFF: Duration = Duration::from_millis(200);
/// How long a join waits for the partitions meant for the member that others still hold
/// (they let go at their next heartbeat); any still held then come in a later answer.
const JOIN_SETTLE: Duration = Duration::from_secs(3);

/// What the member and the broker last agreed.
#[derive(Debug, Clone, Default)]
pub(super) struct MemberState {
    /// Empty until the broker answered a join.
    pub member_id: String,
    pub epoch: i64,
    /// What the consumer holds (it sets this after reconciling).
    pub owned: BTreeSet<u32>,
    /// What the broker said the member may own, from its latest answer.
    pub assigned: BTreeSet<u32>,
}

/// The consumer's handle on its membership task.
#[derive(Debug)]
pub(super) struct Member {
    shared: Arc<Shared>,
    /// Changes whenever an answer changes `assigned`.
    pub changed: watch::Receiver<u64>,
    task: Option<tokio::task::JoinHandle<()>>,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<MemberState>,
    /// Heartbeat now (the consumer let go of partitions), or leave (`leaving`).
    wake: Notify,
    leaving: std::sync::atomic::AtomicBool,
    group: String,
    topic: String,
    instance_id: String,
    assignor: String,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, MemberState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Member {
    /// Joins `group` for `topic` and starts heartbeating. Returns once the member has the
    /// partitions meant for it, or after [`JOIN_SETTLE`] (those others still hold then come in a
    /// later answer).
    pub(super) async fn join(
        channel: Channel,
        group: &str,
        topic: &str,
        instance_id: Option<&str>,
        assignor: Option<&str>,
    ) -> Result<Member, ClientError> {
        let shared = Arc::new(Shared {
            state: Mutex::new(MemberState::default()),
            wake: Notify::new(),
            leaving: std::sync::atomic::AtomicBool::new(false),
            group: group.to_string(),
            topic: topic.to_string(),
            instance_id: instance_id.unwrap_or_default().to_string(),
            assignor: assignor.unwrap_or_default().to_string(),
        });
        let mut client = raw(channel);
        let (tx, changed) = watch::channel(0);
        let started = tokio::time::Instant::now();
        let (mut interval, mut pending) = beat(&mut client, &shared, &tx).await?;
        while pending > 0 && started.elapsed() < JOIN_SETTLE {
            tokio::time::sleep(interval).await;
            (interval, pending) = beat(&mut client, &shared, &tx).await?;
        }
        let task = tokio::spawn(run(client, shared.clone(), tx, interval));
        Ok(Member {
            shared,
            changed,
            task: Some(task),
        })
    }

    /// A copy of the current state.
    pub(super) fn state(&self) -> MemberState {
        self.shared.state().clone()
    }

    /// Records what the consumer holds now; `released` says it let go of some, which the broker
    /// must hear at once so that their new owners can start.
    pub(super) fn set_owned(&self, owned: BTreeSet<u32>, released: bool) {
        self.shared.state().owned = owned;
        if released {
            self.shared.wake.notify_one();
        }
    }

    /// Leaves the group (a static member leaves for a moment: its partitions wait for it until
    /// its session times out) and waits for the broker to hear it.
    pub(super) async fn leave(mut self) {
        self.shared
            .leaving
            .store(true, std::sync::atomic::Ordering::Release);
        self.shared.wake.notify_one();
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        // Dropped without `leave`: the task leaves on its own.
        self.shared
            .leaving
            .store(true, std::sync::atomic::Ordering::Release);
        self.shared.wake.notify_one();
    }
}

/// Heartbeats until the member leaves (or the consumer is gone).
async fn run(
    mut client: StrataClient<Channel>,
    shared: Arc<Shared>,
    tx: watch::Sender<u64>,
    mut interval: Duration,
) {
    loop {
        let woken = tokio::select! {
            () = shared.wake.notified() => true,
            () = tokio::time::sleep(interval) => false,
        };
        if shared.leaving.load(std::sync::atomic::Ordering::Acquire) {
            leave(&mut client, &shared).await;
            return;
        }
        match beat(&mut client, &shared, &tx).await {
            Ok((next, _)) => interval = next,
            Err(e) => {
                let code = e.code();
                if code == Some(Code::FailedPrecondition) {
                    // Fenced, or unknown to the broker (it restarted, or our session expired):
                    // rejoin at once, claiming what we hold; a refused rejoin (a static
                    // instance id still in use) waits before it tries again.
                    let mut state = shared.state();
                    let rejoining = state.member_id.is_empty();
                    state.member_id.clear();
                    state.epoch = JOIN_EPOCH;
                    drop(state);
                    interval = if rejoining {
                        RETRY_BACKOFF
                    } else {
                        Duration::ZERO
                    };
                } else {
                    tracing::debug!(error = %e, woken, "group heartbeat failed; retrying");
                    interval = RETRY_BACKOFF;
                }
            }
        }
    }
}

/// One heartbeat with the current state; applies the answer and returns the next interval and
/// how many partitions meant for the member others still hold.
async fn beat(
    client: &mut StrataClient<Channel>,
    shared: &Shared,
    tx: &watch::Sender<u64>,
) -> Result<(Duration, u32), ClientError> {
    let request = {
        let state = shared.state();
        proto::GroupHeartbeatRequest {
            group: shared.group.clone(),
            member_id: state.member_id.clone(),
            member_epoch: state.epoch,
            instance_id: shared.instance_id.clone(),
            topics: vec![shared.topic.clone()],
            assignor: shared.assignor.clone(),
            // What it holds, and what the last answer gave it that the consumer may be taking
            // up right now: until the consumer lets go of a partition, the broker must count it
            // as held, or it could hand it to another member meanwhile.
            owned: vec![proto::TopicPartitions {
                topic: shared.topic.clone(),
                partitions: state.owned.union(&state.assigned).copied().collect(),
            }],
        }
    };
    let answer = client.group_heartbeat(request).await?.into_inner();
    let pending = answer.pending_partitions;
    let assigned: BTreeSet<u32> = answer
        .assignment
        .into_iter()
        .filter(|tp| tp.topic == shared.topic)
        .flat_map(|tp| tp.partitions)
        .collect();
    let changed = {
        let mut state = shared.state();
        state.member_id = answer.member_id;
        state.epoch = answer.member_epoch;
        let changed = state.assigned != assigned;
        state.assigned = assigned;
        changed
    };
    if changed {
        tx.send_modify(|v| *v += 1);
    }
    let interval = Duration::from_millis(u64::from(answer.heartbeat_interval_ms.max(10)));
    Ok((interval, pending))
}

async fn leave(client: &mut StrataClient<Channel>, shared: &Shared) {
    let (member_id, epoch) = {
        let state = shared.state();
        (state.member_id.clone(), state.epoch)
    };
    if member_id.is_empty() || epoch < 1 {
        return;
    }
    let request = proto::GroupHeartbeatRequest {
        group: shared.group.clone(),
        member_id,
        member_epoch: if shared.instance_id.is_empty() {
            LEAVE_EPOCH
        } else {
            STATIC_LEAVE_EPOCH
        },
        instance_id: shared.instance_id.clone(),
        topics: Vec::new(),
        assignor: String::new(),
        owned: Vec::new(),
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), client.group_heartbeat(request)).await;
}

//! The group protocol over real gRPC: a commit is accepted only from the member that owns the
//! partition at its epoch; a member that left or whose session expired, a non-owner, and a
//! commit without membership while the group has members are refused with FAILED_PRECONDITION
//! naming the group, the member and the epoch; a static member that leaves for a moment gets
//! its partitions back when it rejoins.

mod common;

use common::{Client, Server, create_topic, produce_values, values};
use std::{collections::BTreeSet, time::Duration};
use strata::proto::{
    CommitOffsetsRequest, DescribeGroupRequest, GroupHeartbeatRequest, GroupHeartbeatResponse,
    PartitionOffset, TopicPartitions,
};
use tonic::Code;

/// One member's side of the protocol.
#[derive(Debug, Default, Clone)]
struct Member {
    id: String,
    epoch: i64,
    instance: String,
    owned: BTreeSet<u32>,
}

impl Member {
    async fn beat(&mut self, client: &mut Client) -> Result<GroupHeartbeatResponse, tonic::Status> {
        let answer = client
            .group_heartbeat(GroupHeartbeatRequest {
                group: "billing".into(),
                member_id: self.id.clone(),
                member_epoch: self.epoch,
                instance_id: self.instance.clone(),
                topics: vec!["orders".into()],
                assignor: String::new(),
                owned: vec![TopicPartitions {
                    topic: "orders".into(),
                    partitions: self.owned.iter().copied().collect(),
                }],
            })
            .await?
            .into_inner();
        self.id.clone_from(&answer.member_id);
        self.epoch = answer.member_epoch;
        let released = self
            .owned
            .iter()
            .any(|p| !answer.assignment.iter().any(|tp| tp.partitions.contains(p)));
        self.owned = answer
            .assignment
            .iter()
            .flat_map(|tp| tp.partitions.iter().copied())
            .collect();
        if released {
            // Let go of them at once, as a real member does.
            Box::pin(self.beat(client)).await?;
        }
        Ok(answer)
    }

    async fn commit(
        &self,
        client: &mut Client,
        partition: u32,
        offset: u64,
    ) -> Result<(), tonic::Status> {
        client
            .commit_offsets(CommitOffsetsRequest {
                group: "billing".into(),
                offsets: vec![PartitionOffset {
                    topic: "orders".into(),
                    partition,
                    offset,
                }],
                member_id: self.id.clone(),
                member_epoch: self.epoch,
            })
            .await
            .map(|_| ())
    }
}

#[track_caller]
fn refused(result: Result<(), tonic::Status>, words: &[&str]) {
    let status = result.expect_err("the commit should be refused");
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    for w in words {
        assert!(
            status.message().contains(w),
            "{w:?} missing in {:?}",
            status.message()
        );
    }
}

#[tokio::test]
async fn commits_are_fenced_and_a_static_member_gets_its_partitions_back() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Server::start_with(
        dir.path(),
        &[
            "--group-heartbeat-interval",
            "100ms",
            "--group-session-timeout",
            "1500ms",
        ],
    );
    let mut client = server.client().await;
    create_topic(&mut client, "orders", 4).await;
    for p in 0..4 {
        produce_values(&mut client, "orders", p, &values("v", 0, 10)).await;
    }

    let mut a = Member {
        instance: "billing-a".into(),
        ..Member::default()
    };
    let mut b = Member::default();
    a.beat(&mut client).await.expect("a joins");
    assert_eq!(a.owned.len(), 4, "a lone member owns everything");
    b.beat(&mut client).await.expect("b joins");
    a.beat(&mut client).await.expect("a lets go of two");
    b.beat(&mut client).await.expect("b takes them");
    assert_eq!((a.owned.len(), b.owned.len()), (2, 2));
    assert!(a.owned.is_disjoint(&b.owned));

    let mine = *a.owned.first().expect("a owns one");
    a.commit(&mut client, mine, 5)
        .await
        .expect("the owner commits");
    // Not the owner.
    refused(
        b.commit(&mut client, mine, 6).await,
        &[
            "'billing'",
            &b.id,
            &format!("epoch {}", b.epoch),
            &format!("partition {mine}"),
        ],
    );
    // An epoch from the future is no epoch of a's.
    let mut forged = a.clone();
    forged.epoch += 10;
    refused(
        forged.commit(&mut client, mine, 6).await,
        &["'billing'", &a.id, &format!("{}", forged.epoch)],
    );
    // Without membership, while the group has members.
    refused(
        Member::default().commit(&mut client, mine, 6).await,
        &["'billing'", "2 live member"],
    );

    // The static member leaves for a moment: nobody takes its partitions meanwhile.
    let held = a.owned.clone();
    client
        .group_heartbeat(GroupHeartbeatRequest {
            group: "billing".into(),
            member_id: a.id.clone(),
            member_epoch: -2,
            instance_id: a.instance.clone(),
            ..GroupHeartbeatRequest::default()
        })
        .await
        .expect("a static leave");
    b.beat(&mut client).await.expect("b beats");
    assert_eq!(
        b.owned.len(),
        2,
        "b is not given the away member's partitions"
    );
    // It comes back under the same instance id: same partitions, nothing moved.
    let mut back = Member {
        instance: "billing-a".into(),
        ..Member::default()
    };
    back.beat(&mut client).await.expect("a rejoins");
    assert_eq!(back.owned, held);
    // Its old incarnation is fenced.
    refused(a.commit(&mut client, mine, 7).await, &["'billing'", &a.id]);
    back.commit(&mut client, mine, 7)
        .await
        .expect("the new incarnation commits");

    // b falls silent: after the session timeout it is out, its commits refused, and the
    // other member owns everything.
    let b_partition = *b.owned.first().expect("b owns one");
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        back.beat(&mut client).await.expect("a beats");
    }
    refused(
        b.commit(&mut client, b_partition, 3).await,
        &["'billing'", &b.id, "not in the group"],
    );
    assert_eq!(back.owned.len(), 4);
    let described = client
        .describe_group(DescribeGroupRequest {
            group: "billing".into(),
        })
        .await
        .expect("describe")
        .into_inner();
    assert_eq!(described.members.len(), 1);
    assert_eq!(described.members[0].instance_id, "billing-a");
    assert_eq!(described.state, "stable");
    let owned_by_a = described
        .partitions
        .iter()
        .filter(|p| p.owner == back.id)
        .count();
    assert_eq!(owned_by_a, 4);
    // Lag counts from the commit where there is one, from the earliest offset where not.
    let lag_of = |p: u32| {
        described
            .partitions
            .iter()
            .find(|l| l.partition == p)
            .map(|l| (l.committed_offset, l.lag))
    };
    assert_eq!(lag_of(mine), Some((Some(7), 3)));
    let other = (0..4).find(|p| *p != mine).expect("another partition");
    assert_eq!(lag_of(other), Some((None, 10)));

    // A clean leave: the group has no members, and plain commits work again.
    client
        .group_heartbeat(GroupHeartbeatRequest {
            group: "billing".into(),
            member_id: back.id.clone(),
            member_epoch: -1,
            ..GroupHeartbeatRequest::default()
        })
        .await
        .expect("leave");
    Member::default()
        .commit(&mut client, mine, 8)
        .await
        .expect("a commit without membership, now that the group has none");
}

//! An event-driven story with the Rust client, against a running broker.
//!
//! A sign-up service publishes `user_signed_up` events (JSON, keyed by user id) to the topic
//! `user-signups`. Two independent subscribers each receive every event through their own consumer
//! group: an email sender that welcomes each new user, and an analytics counter that counts sign-ups
//! per plan. The analytics counter is stopped halfway; the events published while it is down wait
//! for it, and when it restarts it catches up from the offsets its group committed: it misses
//! nothing and counts nothing twice.
//!
//! ```text
//! cargo run --release -- serve              # in one terminal
//! cargo run --example signups               # in another (optional argument: the broker's URL)
//! ```
//!
//! It starts from a fresh `user-signups` topic each run (deleting a topic also forgets the
//! groups' offsets in it).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use strata::client::{
    self, Admin, Channel, ClientError, Consumer, ConsumerConfig, Producer, ProducerConfig,
    ProducerRecord, TopicSettings,
};
use tonic::Code;

const TOPIC: &str = "user-signups";

/// The event the sign-up service publishes.
#[derive(Debug, Serialize, Deserialize)]
struct UserSignedUp {
    #[serde(rename = "type")]
    kind: String,
    user_id: String,
    email: String,
    plan: String,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| client::DEFAULT_BROKER.into());
    let channel = client::connect(&url).await?;
    let admin = Admin::new(channel.clone());
    match admin.delete_topic(TOPIC).await {
        Err(e) if e.code() != Some(Code::NotFound) => return Err(e.into()),
        _ => {}
    }
    admin
        .create_topic(TOPIC, 3, &TopicSettings::default())
        .await?;
    println!("created topic '{TOPIC}' with 3 partitions");

    // The email sender runs for the whole story, in its own task.
    let email_sender = tokio::spawn(send_emails(channel.clone(), 10));

    // The sign-up service publishes five events; the analytics counter counts them, then stops.
    let signups = Producer::new(channel.clone(), TOPIC, ProducerConfig::default()).await?;
    publish(&signups, 0..5).await?;
    let counted = count_signups(channel.clone(), 5).await?;
    println!("analytics: counted {counted:?}, then stopped");

    // Five more sign-ups while the analytics counter is down.
    publish(&signups, 5..10).await?;
    let lag = admin.describe_group("analytics").await?;
    let waiting: u64 = lag.partitions.iter().map(|p| p.lag).sum();
    println!("analytics is down; {waiting} events wait for it");

    // It restarts and catches up from its committed offsets: exactly the five it missed.
    let counted = count_signups(channel.clone(), 5).await?;
    println!("analytics: restarted and caught up, counted {counted:?}");

    let emailed = email_sender.await??;
    println!("email sender: sent {emailed} welcome emails");
    for group in ["email-sender", "analytics"] {
        let lag: u64 = admin
            .describe_group(group)
            .await?
            .partitions
            .iter()
            .map(|p| p.lag)
            .sum();
        println!("group '{group}': lag {lag}");
    }
    Ok(())
}

/// Publishes sign-ups `users`, keyed by user id (so one user's events stay in order), and waits
/// until the broker has stored them.
async fn publish(producer: &Producer, users: std::ops::Range<u32>) -> Result<(), ClientError> {
    let plans = ["free", "pro", "team"];
    let mut deliveries = Vec::new();
    for i in users {
        let event = UserSignedUp {
            kind: "user_signed_up".into(),
            user_id: format!("user-{i}"),
            email: format!("user{i}@example.com"),
            plan: plans[i as usize % plans.len()].into(),
        };
        let json = serde_json::to_vec(&event).unwrap_or_default();
        let record = ProducerRecord::new(json)
            .key(event.user_id.clone())
            .header("type", "user_signed_up");
        deliveries.push(producer.send(record).await?);
    }
    for delivery in deliveries {
        let at = delivery.await?;
        println!(
            "published to partition {} at offset {}",
            at.partition, at.offset
        );
    }
    Ok(())
}

/// The email sender: welcomes every new user, committing as it goes, until it has sent `total`.
async fn send_emails(channel: Channel, total: usize) -> Result<usize, ClientError> {
    let mut consumer = Consumer::new(channel, TOPIC, ConsumerConfig::group("email-sender")).await?;
    let mut sent = 0;
    while sent < total {
        let Some(record) = consumer.next().await? else {
            break;
        };
        if let Ok(event) = serde_json::from_slice::<UserSignedUp>(&record.value) {
            println!("email sender: welcome, {} ({})", event.email, event.plan);
            sent += 1;
        }
    }
    // Commits and leaves the group, so that the next instance takes over at once.
    consumer.close().await?;
    Ok(sent)
}

/// One run of the analytics counter: counts `n` sign-ups per plan from where its group left off,
/// commits and stops.
async fn count_signups(channel: Channel, n: usize) -> Result<BTreeMap<String, u32>, ClientError> {
    let mut consumer = Consumer::new(channel, TOPIC, ConsumerConfig::group("analytics")).await?;
    let mut per_plan = BTreeMap::new();
    let mut seen = 0;
    while seen < n {
        let Some(record) = consumer.next().await? else {
            break;
        };
        if let Ok(event) = serde_json::from_slice::<UserSignedUp>(&record.value) {
            *per_plan.entry(event.plan).or_insert(0) += 1;
            seen += 1;
        }
    }
    consumer.close().await?;
    Ok(per_plan)
}

//! The broker's settings and a topic's settings, with the checks that keep them sane.

use super::{BrokerError, GroupTimings};
use crate::record::MAX_BATCH_BYTES;
use crate::storage::{DEFAULT_CACHED_TAIL_BYTES, FaultInjector, FsyncPolicy, LogConfig};
use serde::{Deserialize, Serialize};
use std::{path::PathBuf, sync::Arc, time::Duration};

/// Broker-wide settings: where the data lives, topic defaults and limits. How clients reach the
/// broker (listen address, request and fetch limits, connections) is the server's
/// `ServerConfig`.
#[derive(Clone)]
pub struct BrokerConfig {
    /// Where topics and group offsets live.
    pub data_dir: PathBuf,
    /// The config of a new topic, for every field its creator leaves unset.
    pub topic_defaults: TopicConfig,
    /// The most partitions one topic may have.
    pub max_partitions_per_topic: u32,
    /// The largest `max_record_bytes` a topic may set (itself at most [`MAX_BATCH_BYTES`]).
    /// `strata serve` sets it to the server's request limit: a larger record could never arrive.
    pub max_record_bytes: usize,
    /// How often the ticker runs each log's periodic work (interval fsync, checkpoints, retention).
    pub tick_interval: Duration,
    /// The newest bytes of each partition kept in the page cache; older ones are written back
    /// and dropped from it (see [`LogConfig::cached_tail_bytes`]). `None`: the kernel decides.
    pub cached_tail_bytes: Option<u64>,
    /// Commits appended to a group's journal before it is rewritten as one snapshot entry.
    pub group_compact_entries: usize,
    /// Group members' heartbeat interval and session timeout.
    pub group_timings: GroupTimings,
    /// A seam for tests: every file operation of the broker (partition logs, topic metadata,
    /// group journals, the trash) asks it first and reports to it after. `None` in production.
    pub faults: Option<Arc<dyn FaultInjector>>,
    /// The cluster this broker belongs to; `None`: a cluster of one, no replicated topics.
    pub cluster: Option<super::ClusterConfig>,
}

impl std::fmt::Debug for BrokerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrokerConfig")
            .field("data_dir", &self.data_dir)
            .field("topic_defaults", &self.topic_defaults)
            .field("max_partitions_per_topic", &self.max_partitions_per_topic)
            .field("max_record_bytes", &self.max_record_bytes)
            .field("tick_interval", &self.tick_interval)
            .field("cached_tail_bytes", &self.cached_tail_bytes)
            .field("group_compact_entries", &self.group_compact_entries)
            .field("group_timings", &self.group_timings)
            .field("faults", &self.faults.is_some())
            .field("cluster", &self.cluster)
            .finish()
    }
}

impl BrokerConfig {
    /// The storage settings of one of `topic`'s partition logs under this broker. A replicated
    /// partition's log keeps everything: removing records from under its Raft group would
    /// take entries from it that it may still have to send (retention through the group is
    /// issue 16's work left).
    pub fn log_config(&self, topic: &TopicConfig, replicated: bool) -> LogConfig {
        let config = LogConfig {
            faults: self.faults.clone(),
            ..topic.log_config(self.cached_tail_bytes)
        };
        if replicated {
            LogConfig {
                retention_ms: None,
                retention_bytes: None,
                ..config
            }
        } else {
            config
        }
    }
}

impl BrokerConfig {
    /// Defaults for a broker storing in `data_dir`.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        BrokerConfig {
            data_dir: data_dir.into(),
            topic_defaults: TopicConfig::default(),
            max_partitions_per_topic: 1024,
            max_record_bytes: 64 * 1024 * 1024,
            tick_interval: Duration::from_millis(100),
            cached_tail_bytes: Some(DEFAULT_CACHED_TAIL_BYTES),
            group_compact_entries: 1000,
            group_timings: GroupTimings::default(),
            faults: None,
            cluster: None,
        }
    }
}

/// When a topic's appends are forced to disk (see [`FsyncPolicy`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FsyncMode {
    /// Acknowledged appends are on disk (group commit shares fsyncs).
    Always,
    /// Synced every `fsync_interval_ms`.
    Interval,
    /// The OS writes back when it likes.
    Never,
}

/// A topic's effective settings. Persisted in the topic's metadata file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicConfig {
    /// Sealed segments whose newest record is older than this are deleted. `None`: keep forever.
    pub retention_ms: Option<u64>,
    /// Oldest sealed segments are deleted while a partition is larger than this. `None`: no limit.
    pub retention_bytes: Option<u64>,
    /// A segment rolls before it would grow past this.
    pub segment_max_bytes: u64,
    /// A segment rolls once it has taken appends for this long. `None`: never by age.
    pub segment_max_ms: Option<u64>,
    /// Durability of an acknowledged append.
    pub fsync: FsyncMode,
    /// The fsync period under [`FsyncMode::Interval`].
    pub fsync_interval_ms: u64,
    /// The largest record accepted, counted as encoded in a batch ([`crate::record::Record::encoded_len`]:
    /// key, value, headers and their framing).
    pub max_record_bytes: u32,
}

impl Default for TopicConfig {
    fn default() -> Self {
        let log = LogConfig::default();
        TopicConfig {
            retention_ms: log.retention_ms,
            retention_bytes: log.retention_bytes,
            segment_max_bytes: log.segment_max_bytes,
            segment_max_ms: log.segment_max_ms,
            fsync: FsyncMode::Always,
            fsync_interval_ms: 1000,
            max_record_bytes: 1024 * 1024,
        }
    }
}

/// The smallest segment a topic may ask for: the storage's own minimum, so that what a topic
/// is told it has is what its logs use (a smaller one is refused, not raised).
pub const MIN_SEGMENT_BYTES: u64 = crate::storage::MIN_SEGMENT_BYTES;
/// The largest segment a topic may ask for.
pub const MAX_SEGMENT_BYTES: u64 = MAX_BATCH_BYTES as u64;

impl TopicConfig {
    /// The storage settings of each of the topic's partition logs, keeping the newest
    /// `cached_tail_bytes` of each in the page cache (a broker-wide setting).
    pub fn log_config(&self, cached_tail_bytes: Option<u64>) -> LogConfig {
        LogConfig {
            segment_max_bytes: self.segment_max_bytes,
            segment_max_ms: self.segment_max_ms,
            retention_ms: self.retention_ms,
            retention_bytes: self.retention_bytes,
            fsync: match self.fsync {
                FsyncMode::Always => FsyncPolicy::Always,
                FsyncMode::Interval => {
                    FsyncPolicy::Interval(Duration::from_millis(self.fsync_interval_ms))
                }
                FsyncMode::Never => FsyncPolicy::Never,
            },
            cached_tail_bytes,
            ..LogConfig::default()
        }
    }

    /// Checks every field against the broker's limits.
    pub fn validate(&self, broker: &BrokerConfig) -> Result<(), BrokerError> {
        if self.segment_max_bytes < MIN_SEGMENT_BYTES {
            return Err(BrokerError::invalid(
                "segment_max_bytes",
                format!(
                    "{} is below the smallest segment the storage uses, {MIN_SEGMENT_BYTES} bytes",
                    self.segment_max_bytes
                ),
            ));
        }
        if self.segment_max_bytes > MAX_SEGMENT_BYTES {
            return Err(BrokerError::invalid(
                "segment_max_bytes",
                format!(
                    "{} is above the largest segment, {MAX_SEGMENT_BYTES} bytes",
                    self.segment_max_bytes
                ),
            ));
        }
        if self.segment_max_ms == Some(0) {
            return Err(BrokerError::invalid(
                "segment_max_ms",
                "0 would roll on every append; use -1 to never roll by age",
            ));
        }
        if self.fsync == FsyncMode::Interval && self.fsync_interval_ms == 0 {
            return Err(BrokerError::invalid(
                "fsync_interval_ms",
                "must be at least 1 with the interval fsync policy",
            ));
        }
        let max_record = broker.max_record_bytes.min(MAX_BATCH_BYTES);
        if self.max_record_bytes == 0 || self.max_record_bytes as usize > max_record {
            return Err(BrokerError::invalid(
                "max_record_bytes",
                format!(
                    "{} is outside 1..={max_record} (the broker's request limit)",
                    self.max_record_bytes
                ),
            ));
        }
        Ok(())
    }

    /// This config with the fields `update` sets replaced.
    #[must_use]
    pub fn updated(&self, update: &TopicConfigUpdate) -> TopicConfig {
        TopicConfig {
            retention_ms: update.retention_ms.unwrap_or(self.retention_ms),
            retention_bytes: update.retention_bytes.unwrap_or(self.retention_bytes),
            segment_max_bytes: update.segment_max_bytes.unwrap_or(self.segment_max_bytes),
            segment_max_ms: update.segment_max_ms.unwrap_or(self.segment_max_ms),
            fsync: update.fsync.unwrap_or(self.fsync),
            fsync_interval_ms: update.fsync_interval_ms.unwrap_or(self.fsync_interval_ms),
            max_record_bytes: update.max_record_bytes.unwrap_or(self.max_record_bytes),
        }
    }
}

/// Changes to a topic's config: `None` leaves a field as it is. For the limits, `Some(None)`
/// means "no limit".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[allow(clippy::option_option)] // "leave as is" and "set to no limit" are both needed
pub struct TopicConfigUpdate {
    /// See [`TopicConfig::retention_ms`].
    pub retention_ms: Option<Option<u64>>,
    /// See [`TopicConfig::retention_bytes`].
    pub retention_bytes: Option<Option<u64>>,
    /// See [`TopicConfig::segment_max_bytes`].
    pub segment_max_bytes: Option<u64>,
    /// See [`TopicConfig::segment_max_ms`].
    pub segment_max_ms: Option<Option<u64>>,
    /// See [`TopicConfig::fsync`].
    pub fsync: Option<FsyncMode>,
    /// See [`TopicConfig::fsync_interval_ms`].
    pub fsync_interval_ms: Option<u64>,
    /// See [`TopicConfig::max_record_bytes`].
    pub max_record_bytes: Option<u32>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_durable() {
        let broker = BrokerConfig::new("data");
        let config = TopicConfig::default();
        config.validate(&broker).unwrap();
        assert_eq!(config.log_config(None).fsync, FsyncPolicy::Always);
    }

    #[test]
    fn a_topic_s_record_limit_is_bounded_by_the_broker_s() {
        let mut broker = BrokerConfig::new("data");
        broker.max_record_bytes = 1000;
        let with = |max_record_bytes| TopicConfig {
            max_record_bytes,
            ..TopicConfig::default()
        };
        assert!(with(1000).validate(&broker).is_ok());
        let err = with(1001)
            .validate(&broker)
            .expect_err("over the broker's bound");
        assert_eq!(
            err.to_string(),
            "invalid max_record_bytes: 1001 is outside 1..=1000 (the broker's request limit)"
        );
    }

    #[test]
    fn updates_replace_only_what_they_set() {
        let base = TopicConfig::default();
        let new = base.updated(&TopicConfigUpdate {
            retention_ms: Some(None),
            max_record_bytes: Some(10),
            ..TopicConfigUpdate::default()
        });
        assert_eq!(new.retention_ms, None);
        assert_eq!(new.max_record_bytes, 10);
        assert_eq!(new.segment_max_bytes, base.segment_max_bytes);
    }

    #[test]
    fn out_of_range_values_are_refused() {
        let broker = BrokerConfig::new("data");
        let bad = [
            TopicConfigUpdate {
                segment_max_bytes: Some(10),
                ..TopicConfigUpdate::default()
            },
            TopicConfigUpdate {
                max_record_bytes: Some(0),
                ..TopicConfigUpdate::default()
            },
            TopicConfigUpdate {
                fsync: Some(FsyncMode::Interval),
                fsync_interval_ms: Some(0),
                ..TopicConfigUpdate::default()
            },
        ];
        for update in bad {
            assert!(
                TopicConfig::default()
                    .updated(&update)
                    .validate(&broker)
                    .is_err()
            );
        }
    }
}

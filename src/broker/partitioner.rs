//! Key routing lives in [`crate::record`] so that the client routes exactly as the broker does
//! without depending on the broker; this module keeps the broker's path to it.

pub use crate::record::{murmur2, partition_for_key};

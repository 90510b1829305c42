//! The synchronous, durable partition log.

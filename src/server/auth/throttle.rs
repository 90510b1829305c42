//! Wrong tokens per client: a token bucket per address, so a guesser runs out of tries while
//! others are served. IPv6 clients are counted by their /64 (one host usually holds a whole /64,
//! and would otherwise get 2^64 buckets); an IPv4-mapped IPv6 address counts as its IPv4 one.
//! The record is bounded: when it is full, addresses whose buckets have refilled (they tell
//! nothing) go first, then the one with the most tries left, so a burst from many addresses
//! cannot wipe out the record of a guesser being throttled right now.

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv6Addr},
    time::Instant,
};

/// Wrong tokens one address may send in a burst, and how many it gets back per second; past
/// them, every token from the address is refused unchecked until it has tries again (tokens are
/// 256 random bits, so this bounds the work and the log lines guessing costs, not the odds).
pub(super) const FAILURE_BURST: f64 = 20.0;
pub(super) const FAILURES_PER_SECOND: f64 = 5.0;
/// Addresses whose failures are remembered at most.
pub(super) const MAX_TRACKED_CLIENTS: usize = 10_000;

/// Whom a failure is counted against: an IPv4 address or an IPv6 /64 prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct Client(IpAddr);

impl Client {
    pub(super) fn of(ip: IpAddr) -> Client {
        match ip {
            IpAddr::V4(v4) => Client(IpAddr::V4(v4)),
            IpAddr::V6(v6) => {
                if let Some(v4) = v6.to_ipv4_mapped() {
                    Client(IpAddr::V4(v4))
                } else {
                    let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                    Client(IpAddr::V6(Ipv6Addr::from(prefix)))
                }
            }
        }
    }
}

/// Tries left per client, refilled over time.
#[derive(Debug, Default)]
pub(super) struct Throttle {
    /// Per client: (tries it has left, when that was counted).
    clients: HashMap<Client, (f64, Instant)>,
}

impl Throttle {
    /// Whether `client` may try a token at `now`.
    pub(super) fn may_try(&mut self, client: Client, now: Instant) -> bool {
        self.clients.get_mut(&client).is_none_or(|bucket| {
            refill(bucket, now);
            bucket.0 >= 1.0
        })
    }

    /// `client` sent a wrong token at `now`.
    pub(super) fn failed(&mut self, client: Client, now: Instant) {
        if self.clients.len() >= MAX_TRACKED_CLIENTS && !self.clients.contains_key(&client) {
            self.make_room(now);
        }
        let bucket = self.clients.entry(client).or_insert((FAILURE_BURST, now));
        refill(bucket, now);
        bucket.0 = (bucket.0 - 1.0).max(0.0);
    }

    /// Forgets the refilled buckets; if none has, the one with the most tries left (the least
    /// suspect).
    fn make_room(&mut self, now: Instant) {
        self.clients.retain(|_, bucket| {
            refill(bucket, now);
            bucket.0 < FAILURE_BURST
        });
        if self.clients.len() >= MAX_TRACKED_CLIENTS
            && let Some(least_suspect) = self
                .clients
                .iter()
                .max_by(|(_, (a, _)), (_, (b, _))| a.total_cmp(b))
                .map(|(client, _)| *client)
        {
            self.clients.remove(&least_suspect);
        }
    }

    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.clients.len()
    }
}

fn refill(bucket: &mut (f64, Instant), now: Instant) {
    let (left, at) = bucket;
    let elapsed = now.saturating_duration_since(*at).as_secs_f64();
    *left = (*left + elapsed * FAILURES_PER_SECOND).min(FAILURE_BURST);
    *at = now;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::{net::Ipv4Addr, time::Duration};

    fn v4(last: u8) -> Client {
        Client::of(IpAddr::V4(Ipv4Addr::new(10, 0, 0, last)))
    }

    fn exhaust(throttle: &mut Throttle, client: Client, now: Instant) {
        for _ in 0..FAILURE_BURST as usize {
            throttle.failed(client, now);
        }
    }

    #[test]
    fn an_ipv6_host_is_counted_by_its_64_and_a_mapped_ipv4_as_itself() {
        let a: Ipv6Addr = "2001:db8:1:2::1".parse().unwrap();
        let b: Ipv6Addr = "2001:db8:1:2:ffff:ffff:ffff:fffe".parse().unwrap();
        let other: Ipv6Addr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(Client::of(a.into()), Client::of(b.into()));
        assert_ne!(Client::of(a.into()), Client::of(other.into()));
        let mapped = Ipv4Addr::new(10, 0, 0, 7).to_ipv6_mapped();
        assert_eq!(Client::of(mapped.into()), v4(7));

        let now = Instant::now();
        let mut throttle = Throttle::default();
        exhaust(&mut throttle, Client::of(a.into()), now);
        assert!(!throttle.may_try(Client::of(b.into()), now), "same /64");
        assert!(throttle.may_try(Client::of(other.into()), now));
    }

    #[test]
    fn tries_come_back_at_the_refill_rate() {
        let now = Instant::now();
        let mut throttle = Throttle::default();
        exhaust(&mut throttle, v4(1), now);
        assert!(!throttle.may_try(v4(1), now));
        assert!(throttle.may_try(v4(2), now));
        let later = now + Duration::from_secs_f64(1.0 / FAILURES_PER_SECOND);
        assert!(throttle.may_try(v4(1), later), "one try back");
        throttle.failed(v4(1), later);
        assert!(!throttle.may_try(v4(1), later));
    }

    #[test]
    fn a_full_record_keeps_the_guesser_being_throttled() {
        let start = Instant::now();
        let mut throttle = Throttle::default();
        let guesser = v4(1);
        exhaust(&mut throttle, guesser, start);
        // Many other addresses each fail once, later: the record fills up and overflows.
        let now = start + Duration::from_millis(10);
        for i in 0..MAX_TRACKED_CLIENTS as u32 + 50 {
            let other = Client::of(IpAddr::V4(Ipv4Addr::from(0x0b00_0000 + i)));
            throttle.failed(other, now);
            assert!(throttle.tracked() <= MAX_TRACKED_CLIENTS);
        }
        assert!(
            !throttle.may_try(guesser, now),
            "the overflow forgot the throttled guesser"
        );
        // Once the flood's buckets have refilled, room is made from them.
        let refilled = now + Duration::from_secs(10);
        throttle.failed(v4(2), refilled);
        assert!(
            throttle.tracked() < MAX_TRACKED_CLIENTS / 2,
            "{}",
            throttle.tracked()
        );
    }
}

//! Assignors: which member of a group should own which partition (the *target* assignment).
//!
//! The broker computes the target; members converge on it one partition at a time (see
//! `membership.rs`). Both assignors are pure functions of the members, their subscriptions, the
//! topics' partition counts and (for `Uniform`) who holds what now.

use std::collections::{BTreeMap, BTreeSet};

/// A set of partitions per topic.
pub type Assignment = BTreeMap<String, BTreeSet<u32>>;

/// How a group's partitions are spread over its members.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Assignor {
    /// As even as possible across all the group's topics, and sticky: a partition stays with
    /// the member that holds it unless balance needs it elsewhere (Kafka's `uniform`).
    #[default]
    Uniform,
    /// Per topic, contiguous ranges of partitions to members in id order (Kafka's `range`):
    /// members subscribed to the same topics get the same partition numbers of each.
    Range,
}

impl Assignor {
    /// The assignor called `name` (`uniform`, `range`; empty: the default).
    pub fn parse(name: &str) -> Option<Assignor> {
        match name {
            "" | "uniform" => Some(Assignor::Uniform),
            "range" => Some(Assignor::Range),
            _ => None,
        }
    }

    /// Its name.
    pub fn name(self) -> &'static str {
        match self {
            Assignor::Uniform => "uniform",
            Assignor::Range => "range",
        }
    }

    /// The target assignment. `members` maps each member id to the topics it subscribes to;
    /// `partitions` gives each topic's partition count; `current` who holds what now (for
    /// stickiness). Every partition of a subscribed topic goes to exactly one subscriber.
    pub fn assign(
        self,
        members: &BTreeMap<String, BTreeSet<String>>,
        partitions: &BTreeMap<String, u32>,
        current: &BTreeMap<String, Assignment>,
    ) -> BTreeMap<String, Assignment> {
        match self {
            Assignor::Uniform => uniform(members, partitions, current),
            Assignor::Range => range(members, partitions),
        }
    }
}

fn range(
    members: &BTreeMap<String, BTreeSet<String>>,
    partitions: &BTreeMap<String, u32>,
) -> BTreeMap<String, Assignment> {
    let mut out: BTreeMap<String, Assignment> = members
        .keys()
        .map(|m| (m.clone(), Assignment::new()))
        .collect();
    for (topic, &count) in partitions {
        let subscribers: Vec<&String> = members
            .iter()
            .filter(|(_, topics)| topics.contains(topic))
            .map(|(m, _)| m)
            .collect();
        if subscribers.is_empty() {
            continue;
        }
        let n = subscribers.len() as u32;
        let (each, extra) = (count / n, count % n);
        let mut next = 0;
        for (i, m) in subscribers.into_iter().enumerate() {
            let take = each + u32::from((i as u32) < extra);
            if take > 0 {
                out.entry(m.clone())
                    .or_default()
                    .insert(topic.clone(), (next..next + take).collect());
            }
            next += take;
        }
    }
    out
}

fn uniform(
    members: &BTreeMap<String, BTreeSet<String>>,
    partitions: &BTreeMap<String, u32>,
    current: &BTreeMap<String, Assignment>,
) -> BTreeMap<String, Assignment> {
    let mut out: BTreeMap<String, Assignment> = members
        .keys()
        .map(|m| (m.clone(), Assignment::new()))
        .collect();
    if members.is_empty() {
        return out;
    }
    // Every partition some member subscribes to.
    let all: Vec<(String, u32)> = partitions
        .iter()
        .filter(|(t, _)| members.values().any(|topics| topics.contains(*t)))
        .flat_map(|(t, &n)| (0..n).map(move |p| (t.clone(), p)))
        .collect();
    let eligible = |m: &str, t: &str| members.get(m).is_some_and(|ts| ts.contains(t));
    // Quotas: as even as the subscriptions allow. The larger quotas go to the members that
    // hold the most now, so that fewer partitions move.
    let k = members.len();
    let (base, extra) = (all.len() / k, all.len() % k);
    let held = |m: &str| {
        current
            .get(m)
            .map_or(0, |a| a.values().map(BTreeSet::len).sum::<usize>())
    };
    let mut by_held: Vec<&String> = members.keys().collect();
    by_held.sort_by(|a, b| held(b).cmp(&held(a)).then(a.cmp(b)));
    let quota: BTreeMap<&String, usize> = by_held
        .iter()
        .enumerate()
        .map(|(i, m)| (*m, base + usize::from(i < extra)))
        .collect();
    let mut count: BTreeMap<&String, usize> = members.keys().map(|m| (m, 0)).collect();
    let mut unplaced = Vec::new();
    // Keep what members hold, up to their quota.
    for (topic, p) in &all {
        let holder = current.iter().find(|(m, a)| {
            members.contains_key(*m)
                && eligible(m, topic)
                && a.get(topic).is_some_and(|ps| ps.contains(p))
        });
        match holder {
            Some((m, _)) if count[m] < quota[m] => {
                if let Some(c) = count.get_mut(m) {
                    *c += 1;
                }
                out.entry(m.clone())
                    .or_default()
                    .entry(topic.clone())
                    .or_default()
                    .insert(*p);
            }
            _ => unplaced.push((topic.clone(), *p)),
        }
    }
    // The rest to the eligible member furthest below its quota (then the fewest, then the
    // lowest id), the partitions with the fewest eligible members first.
    let eligible_count = |t: &str| members.values().filter(|topics| topics.contains(t)).count();
    unplaced.sort_by_key(|(t, p)| (eligible_count(t), t.clone(), *p));
    for (topic, p) in unplaced {
        let chosen = members
            .keys()
            .filter(|m| eligible(m, &topic))
            .min_by(|a, b| {
                let room = |m: &String| quota[m] as i64 - count[m] as i64;
                room(b)
                    .cmp(&room(a))
                    .then(count[*a].cmp(&count[*b]))
                    .then(a.cmp(b))
            })
            .cloned();
        if let Some(m) = chosen {
            if let Some(c) = count.get_mut(&m) {
                *c += 1;
            }
            out.entry(m)
                .or_default()
                .entry(topic)
                .or_default()
                .insert(p);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn members(ids: &[&str], topics: &[&str]) -> BTreeMap<String, BTreeSet<String>> {
        ids.iter()
            .map(|m| {
                (
                    (*m).to_string(),
                    topics.iter().map(|t| (*t).to_string()).collect(),
                )
            })
            .collect()
    }

    fn counts(a: &BTreeMap<String, Assignment>) -> Vec<usize> {
        a.values()
            .map(|x| x.values().map(BTreeSet::len).sum())
            .collect()
    }

    /// Every partition of `topics` exactly once.
    fn covers_once(a: &BTreeMap<String, Assignment>, topics: &[(&str, u32)]) {
        for (t, n) in topics {
            let mut seen: Vec<u32> = a
                .values()
                .flat_map(|x| x.get(*t).into_iter().flatten().copied())
                .collect();
            seen.sort_unstable();
            assert_eq!(seen, (0..*n).collect::<Vec<_>>(), "topic {t}: {a:?}");
        }
    }

    #[test]
    fn uniform_spreads_evenly_and_moves_only_what_balance_needs() {
        let parts: BTreeMap<String, u32> = [("orders".to_string(), 12)].into();
        let three = members(&["a", "b", "c"], &["orders"]);
        let first = Assignor::Uniform.assign(&three, &parts, &BTreeMap::new());
        covers_once(&first, &[("orders", 12)]);
        assert_eq!(counts(&first), [4, 4, 4]);

        // A fourth member: three partitions move to it, one from each, nothing else moves.
        let four = members(&["a", "b", "c", "d"], &["orders"]);
        let second = Assignor::Uniform.assign(&four, &parts, &first);
        covers_once(&second, &[("orders", 12)]);
        assert_eq!(counts(&second), [3, 3, 3, 3]);
        for m in ["a", "b", "c"] {
            let kept = &second[m]["orders"];
            assert!(
                kept.is_subset(&first[m]["orders"]),
                "{m} gained a partition"
            );
        }

        // A member leaves: only its partitions move.
        let back = members(&["a", "b", "d"], &["orders"]);
        let third = Assignor::Uniform.assign(&back, &parts, &second);
        covers_once(&third, &[("orders", 12)]);
        assert_eq!(counts(&third), [4, 4, 4]);
        for m in ["a", "b", "d"] {
            assert!(
                second[m]["orders"].is_subset(&third[m]["orders"]),
                "{m} lost one"
            );
        }
    }

    #[test]
    fn uniform_gives_a_topic_only_to_its_subscribers() {
        let parts: BTreeMap<String, u32> = [("a".to_string(), 4), ("b".to_string(), 2)].into();
        let mut ms = members(&["m1"], &["a", "b"]);
        ms.extend(members(&["m2"], &["a"]));
        let got = Assignor::Uniform.assign(&ms, &parts, &BTreeMap::new());
        covers_once(&got, &[("a", 4), ("b", 2)]);
        assert!(!got["m2"].contains_key("b"));
        assert_eq!(counts(&got), [3, 3]);
    }

    #[test]
    fn range_hands_out_contiguous_ranges_in_member_order() {
        let parts: BTreeMap<String, u32> = [("t".to_string(), 7)].into();
        let got =
            Assignor::Range.assign(&members(&["x", "y", "z"], &["t"]), &parts, &BTreeMap::new());
        assert_eq!(got["x"]["t"], (0..3).collect());
        assert_eq!(got["y"]["t"], (3..5).collect());
        assert_eq!(got["z"]["t"], (5..7).collect());
        // More members than partitions: the last ones get nothing.
        let parts: BTreeMap<String, u32> = [("t".to_string(), 1)].into();
        let got = Assignor::Range.assign(&members(&["x", "y"], &["t"]), &parts, &BTreeMap::new());
        covers_once(&got, &[("t", 1)]);
        assert!(got["y"].is_empty());
    }

    #[test]
    fn names_parse_back() {
        for a in [Assignor::Uniform, Assignor::Range] {
            assert_eq!(Assignor::parse(a.name()), Some(a));
        }
        assert_eq!(Assignor::parse(""), Some(Assignor::Uniform));
        assert_eq!(Assignor::parse("sticky"), None);
    }
}

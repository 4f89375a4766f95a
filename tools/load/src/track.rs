//! Completeness of one subscriber's stream: which sequence numbers arrived, how often, in what
//! order. Exact (a bitset over the expected sequence numbers), so a run can claim "nothing lost,
//! nothing duplicated, nothing reordered" and not just "the counts add up".
//!
//! With `--resume` the publisher also says what became of every message ([`TopicLog`]: a
//! position, *uncertain*, or never published), and a subscriber records the explicit resets it
//! got; an absent message is then *missing*, *uncertain* (its publish's outcome is unknown, so
//! its absence is allowed) or *skipped by a reset* (a reset at or past its position). The rules
//! are tools/load/README.md's "What counts as what".

use std::collections::HashMap;
use std::rc::Rc;

/// Per-subscriber accounting over sequence numbers `0..expected`.
#[derive(Debug, Clone)]
pub struct Tracker {
    expected: u64,
    bits: Vec<u64>,
    distinct: u64,
    /// Highest sequence number seen so far, if any.
    max_seen: Option<u64>,
    pub duplicated: u64,
    pub out_of_order: u64,
    /// Sequence numbers outside `0..expected` (someone else's message, or a bug).
    pub unexpected: u64,
    /// The explicit resets received, each with the position it carried.
    resets: Vec<Pos>,
    /// What the publisher did, once it has finished (`--resume` only).
    log: Option<Rc<TopicLog>>,
    /// With a log: sequence numbers confirmed, not covered by a reset and not received yet.
    owed: u64,
}

/// The totals a report adds up.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Completeness {
    pub expected: u64,
    pub received: u64,
    pub missing: u64,
    pub duplicated: u64,
    pub out_of_order: u64,
    pub unexpected: u64,
    /// Not received, and covered by an explicit reset the subscriber got (not in `missing`).
    pub skipped_by_reset: u64,
    /// Not received, and the publish's outcome is unknown (not in `missing`).
    pub uncertain_absent: u64,
}

impl Completeness {
    pub fn add(&mut self, o: &Completeness) {
        self.expected += o.expected;
        self.received += o.received;
        self.missing += o.missing;
        self.duplicated += o.duplicated;
        self.out_of_order += o.out_of_order;
        self.unexpected += o.unexpected;
        self.skipped_by_reset += o.skipped_by_reset;
        self.uncertain_absent += o.uncertain_absent;
    }
}

/// A position `EPOCH:OFFSET`: the epoch is opaque text, the offset a count.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Pos {
    pub epoch: String,
    pub offset: u64,
}

impl Pos {
    /// Parses `EPOCH:OFFSET` (an epoch of 1..=32 characters without `:` or spaces).
    pub fn parse(s: &str) -> Option<Pos> {
        let (e, o) = s.trim().rsplit_once(':')?;
        let ok = !e.is_empty() && e.len() <= 32 && !e.contains([':', ' ', '\t']);
        let offset = o.parse().ok().filter(|_| !o.starts_with('+'))?;
        ok.then(|| Pos {
            epoch: e.to_string(),
            offset,
        })
    }

    pub fn parse_bytes(b: &[u8]) -> Option<Pos> {
        Pos::parse(std::str::from_utf8(b).ok()?)
    }
}

impl std::fmt::Display for Pos {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.epoch, self.offset)
    }
}

/// What became of one published message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fate {
    /// Answered 2xx with this position.
    Confirmed(Pos),
    /// Sent, outcome unknown (503 "not confirmed", connection lost after the request was
    /// written, no answer in time): it may arrive, at most once.
    Uncertain,
    /// Never published (refused until the run's time was up, or refused for good).
    Failed,
}

/// One topic's publishes, by sequence number, and the order its epochs first appeared in.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TopicLog {
    fates: Vec<Fate>,
    epoch_rank: HashMap<String, usize>,
}

impl TopicLog {
    pub fn new(fates: Vec<Fate>) -> TopicLog {
        let mut epoch_rank = HashMap::new();
        for f in &fates {
            if let Fate::Confirmed(p) = f {
                let n = epoch_rank.len();
                epoch_rank.entry(p.epoch.clone()).or_insert(n);
            }
        }
        TopicLog { fates, epoch_rank }
    }

    pub fn fate(&self, seq: u64) -> Option<&Fate> {
        self.fates.get(seq as usize)
    }

    /// The compact form sent to worker processes: `EPOCH:OFFSET`, `?` (uncertain) or `` (failed).
    pub fn to_wire(&self) -> Vec<String> {
        self.fates
            .iter()
            .map(|f| match f {
                Fate::Confirmed(p) => p.to_string(),
                Fate::Uncertain => "?".into(),
                Fate::Failed => String::new(),
            })
            .collect()
    }

    pub fn from_wire(v: &[String]) -> TopicLog {
        TopicLog::new(
            v.iter()
                .map(|s| match s.as_str() {
                    "?" => Fate::Uncertain,
                    s => Pos::parse(s).map_or(Fate::Failed, Fate::Confirmed),
                })
                .collect(),
        )
    }

    /// Whether a reset at `r` covers a message published at `p`: the same epoch at or past
    /// it, or a later epoch (one first seen after `p`'s, or one no publish of ours was
    /// answered in, which can only be newer).
    fn covers(&self, r: &Pos, p: &Pos) -> bool {
        if r.epoch == p.epoch {
            return r.offset >= p.offset;
        }
        let rank = |e: &str| self.epoch_rank.get(e).copied().unwrap_or(usize::MAX);
        rank(&r.epoch) > rank(&p.epoch)
    }
}

impl Tracker {
    pub fn new(expected: u64) -> Self {
        Tracker {
            expected,
            bits: vec![0; expected.div_ceil(64) as usize],
            distinct: 0,
            max_seen: None,
            duplicated: 0,
            out_of_order: 0,
            unexpected: 0,
            resets: Vec::new(),
            log: None,
            owed: 0,
        }
    }

    /// An explicit reset at `p`: absent messages at or before it are skipped, not missing.
    pub fn reset_at(&mut self, p: Pos) {
        self.resets.push(p);
        self.recount();
    }

    pub fn resets(&self) -> usize {
        self.resets.len()
    }

    /// What the publisher did; from now on [`complete`](Self::complete) waits only for what
    /// can still come.
    pub fn set_log(&mut self, log: Rc<TopicLog>) {
        self.log = Some(log);
        self.recount();
    }

    fn received(&self, seq: u64) -> bool {
        self.bits[(seq / 64) as usize] & (1 << (seq % 64)) != 0
    }

    /// Whether `seq` must still arrive: confirmed and not covered by a reset.
    fn owed_seq(&self, log: &TopicLog, seq: u64) -> bool {
        match log.fate(seq) {
            Some(Fate::Confirmed(p)) => !self.resets.iter().any(|r| log.covers(r, p)),
            _ => false,
        }
    }

    fn recount(&mut self) {
        let Some(log) = self.log.clone() else { return };
        self.owed = (0..self.expected)
            .filter(|&s| !self.received(s) && self.owed_seq(&log, s))
            .count() as u64;
    }

    /// Records one received sequence number.
    pub fn record(&mut self, seq: u64) {
        if seq >= self.expected {
            self.unexpected += 1;
            return;
        }
        let (w, b) = ((seq / 64) as usize, seq % 64);
        if self.bits[w] & (1 << b) != 0 {
            self.duplicated += 1;
            return;
        }
        self.bits[w] |= 1 << b;
        self.distinct += 1;
        if let Some(log) = &self.log {
            if self.owed_seq(log, seq) {
                self.owed -= 1;
            }
        }
        match self.max_seen {
            Some(m) if seq < m => self.out_of_order += 1,
            _ => self.max_seen = Some(seq),
        }
    }

    /// Nothing more is to come: every expected sequence number has arrived, or, once the
    /// publisher's log is known, every one that was confirmed and not covered by a reset.
    pub fn complete(&self) -> bool {
        match self.log {
            None => self.distinct == self.expected,
            Some(_) => self.owed == 0,
        }
    }

    /// The uncertain messages this subscriber received (each, once).
    pub fn uncertain_received(&self) -> Vec<u64> {
        let Some(log) = &self.log else {
            return Vec::new();
        };
        (0..self.expected)
            .filter(|&s| self.received(s) && log.fate(s) == Some(&Fate::Uncertain))
            .collect()
    }

    pub fn totals(&self) -> Completeness {
        self.totals_seen(|_| false)
    }

    /// [`totals`](Self::totals), knowing which uncertain messages other subscribers of the
    /// topic received (`seen`): those were published, so absent here they are missing — unless
    /// this subscriber got a reset, which may have covered them (their positions are unknown).
    pub fn totals_seen(&self, seen: impl Fn(u64) -> bool) -> Completeness {
        let mut c = Completeness {
            expected: self.expected,
            received: self.distinct + self.duplicated + self.unexpected,
            missing: self.expected - self.distinct,
            duplicated: self.duplicated,
            out_of_order: self.out_of_order,
            unexpected: self.unexpected,
            ..Default::default()
        };
        let Some(log) = &self.log else { return c };
        for s in (0..self.expected).filter(|&s| !self.received(s)) {
            match log.fate(s) {
                Some(Fate::Uncertain) if seen(s) && self.resets.is_empty() => continue,
                Some(Fate::Uncertain) => c.uncertain_absent += 1,
                Some(Fate::Confirmed(p)) if self.resets.iter().any(|r| log.covers(r, p)) => {
                    c.skipped_by_reset += 1
                }
                _ => continue,
            }
            c.missing -= 1;
        }
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(expected: u64, seqs: &[u64]) -> Completeness {
        let mut t = Tracker::new(expected);
        for &s in seqs {
            t.record(s);
        }
        t.totals()
    }

    fn c(expected: u64, received: u64, missing: u64, dup: u64, ooo: u64, unx: u64) -> Completeness {
        Completeness {
            expected,
            received,
            missing,
            duplicated: dup,
            out_of_order: ooo,
            unexpected: unx,
            ..Default::default()
        }
    }

    #[test]
    fn table() {
        // (expected, received sequence, totals)
        let cases: &[(u64, &[u64], Completeness)] = &[
            (0, &[], c(0, 0, 0, 0, 0, 0)),
            (3, &[0, 1, 2], c(3, 3, 0, 0, 0, 0)),
            (3, &[], c(3, 0, 3, 0, 0, 0)),
            (4, &[0, 2, 3], c(4, 3, 1, 0, 0, 0)),
            (3, &[0, 1, 1, 2], c(3, 4, 0, 1, 0, 0)),
            (3, &[0, 2, 1], c(3, 3, 0, 0, 1, 0)),
            (4, &[3, 2, 1, 0], c(4, 4, 0, 0, 3, 0)),
            // A duplicate of an earlier message is a duplicate, not also out of order.
            (3, &[0, 1, 2, 0], c(3, 4, 0, 1, 0, 0)),
            (2, &[0, 5, 1], c(2, 3, 0, 0, 0, 1)),
            // Across a word boundary of the bitset.
            (130, &(0..130).collect::<Vec<_>>(), c(130, 130, 0, 0, 0, 0)),
            (130, &[129, 64, 63, 0], c(130, 4, 126, 0, 3, 0)),
        ];
        for (i, (expected, seqs, want)) in cases.iter().enumerate() {
            assert_eq!(run(*expected, seqs), *want, "case {i}");
        }
    }

    #[test]
    fn complete_only_when_all_arrived() {
        let mut t = Tracker::new(2);
        assert!(!t.complete());
        t.record(1);
        t.record(1);
        assert!(!t.complete());
        t.record(0);
        assert!(t.complete());
        assert!(Tracker::new(0).complete());
    }

    fn pos(s: &str) -> Pos {
        Pos::parse(s).unwrap()
    }

    #[test]
    fn positions() {
        assert_eq!(
            Pos::parse("3f9a1c07b2e4:17"),
            Some(Pos {
                epoch: "3f9a1c07b2e4".into(),
                offset: 17
            })
        );
        assert_eq!(pos("e:0").to_string(), "e:0");
        for bad in [
            "", ":1", "e:", "e:x", "e:-1", "e:+1", "a b:1", "17", "a:b:1",
        ] {
            assert_eq!(Pos::parse(bad), None, "{bad:?}");
        }
    }

    /// Five messages of one topic: 0..=2 in epoch a at 1..=3, 3 uncertain, 4 at a:5 (3 took
    /// a:4); then 5 in a new epoch b, and 6 never published.
    fn log() -> Rc<TopicLog> {
        Rc::new(TopicLog::from_wire(
            &["a:1", "a:2", "a:3", "?", "a:5", "b:1", ""].map(String::from),
        ))
    }

    #[test]
    fn the_log_survives_its_wire_form() {
        let l = log();
        assert_eq!(TopicLog::from_wire(&l.to_wire()), *l);
        assert_eq!(l.fate(3), Some(&Fate::Uncertain));
        assert_eq!(l.fate(6), Some(&Fate::Failed));
        assert_eq!(l.fate(7), None);
    }

    /// (received, resets, complete once the log is known, missing, skipped, uncertain)
    type Case = (&'static [u64], &'static [&'static str], bool, u64, u64, u64);

    #[test]
    fn absent_messages_are_missing_uncertain_or_skipped_by_a_reset() {
        let cases: &[Case] = &[
            // Everything but the uncertain one and the failed one: complete, 1 missing (the
            // failed one never came), the uncertain one allowed.
            (&[0, 1, 2, 4, 5], &[], true, 1, 0, 1),
            // The uncertain one arrived too.
            (&[0, 1, 2, 3, 4, 5], &[], true, 1, 0, 0),
            // 1 and 2 lost: missing, not complete.
            (&[0, 4, 5], &[], false, 3, 0, 1),
            // A reset at a:3 covers 1 and 2 (and the uncertain 3 stays uncertain).
            (&[0, 4, 5], &["a:3"], true, 1, 2, 1),
            // A reset at a:2 covers only 1: 2 is missing.
            (&[0, 4, 5], &["a:2"], false, 2, 1, 1),
            // A reset into epoch b covers everything of epoch a; into an epoch no publish
            // was answered in, everything before it.
            (&[5], &["b:0"], true, 1, 4, 1),
            (&[], &["c:9"], true, 1, 5, 1),
            // A reset does not excuse what comes after it: 5 (b:1) after a reset at b:0.
            (&[0, 1, 2], &["b:0"], false, 2, 1, 1),
        ];
        for (i, &(got, resets, complete, missing, skipped, uncertain)) in cases.iter().enumerate() {
            // The log arriving before and after the deliveries gives the same answer.
            for log_first in [false, true] {
                let mut t = Tracker::new(7);
                if log_first {
                    t.set_log(log());
                }
                for r in resets {
                    t.reset_at(pos(r));
                }
                for &s in got {
                    t.record(s);
                }
                if !log_first {
                    t.set_log(log());
                }
                let c = t.totals();
                assert_eq!(t.complete(), complete, "case {i}");
                assert_eq!(
                    (c.missing, c.skipped_by_reset, c.uncertain_absent),
                    (missing, skipped, uncertain),
                    "case {i} {c:?}"
                );
                assert_eq!(
                    c.missing + c.skipped_by_reset + c.uncertain_absent + got.len() as u64,
                    7
                );
            }
        }
        // An uncertain message another subscriber received was published: missing here,
        // unless a reset here may have covered it.
        let mut t = Tracker::new(7);
        t.set_log(log());
        for s in [0, 1, 2, 4, 5] {
            t.record(s);
        }
        assert!(t.uncertain_received().is_empty());
        let c = t.totals_seen(|s| s == 3);
        assert_eq!((c.missing, c.uncertain_absent), (2, 0));
        t.reset_at(pos("a:0"));
        let c = t.totals_seen(|s| s == 3);
        assert_eq!((c.missing, c.uncertain_absent), (1, 1));
        // A duplicate of an uncertain message is a duplicate.
        let mut t = Tracker::new(7);
        t.set_log(log());
        for s in [0, 1, 2, 3, 3, 4, 5] {
            t.record(s);
        }
        assert_eq!(t.totals().duplicated, 1);
        assert_eq!(t.uncertain_received(), [3]);
        // Without a log every absent message is missing, resets or not (today's rule).
        let mut t = Tracker::new(7);
        t.reset_at(pos("c:9"));
        assert_eq!(t.totals().missing, 7);
        assert!(!t.complete());
    }
}

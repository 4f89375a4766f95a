//! Completeness of one subscriber's stream: which sequence numbers arrived, how often, in what
//! order. Exact (a bitset over the expected sequence numbers), so a run can claim "nothing lost,
//! nothing duplicated, nothing reordered" and not just "the counts add up".

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
}

impl Completeness {
    pub fn add(&mut self, o: &Completeness) {
        self.expected += o.expected;
        self.received += o.received;
        self.missing += o.missing;
        self.duplicated += o.duplicated;
        self.out_of_order += o.out_of_order;
        self.unexpected += o.unexpected;
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
        }
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
        match self.max_seen {
            Some(m) if seq < m => self.out_of_order += 1,
            _ => self.max_seen = Some(seq),
        }
    }

    /// Every expected sequence number has arrived.
    pub fn complete(&self) -> bool {
        self.distinct == self.expected
    }

    pub fn missing(&self) -> u64 {
        self.expected - self.distinct
    }

    pub fn totals(&self) -> Completeness {
        Completeness {
            expected: self.expected,
            received: self.distinct + self.duplicated + self.unexpected,
            missing: self.missing(),
            duplicated: self.duplicated,
            out_of_order: self.out_of_order,
            unexpected: self.unexpected,
        }
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
}

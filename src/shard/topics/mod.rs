//! Every topic a shard knows, in one table: its home state or its run of received messages, and
//! its subscribers here. The bottom of the shard's stack: it imports nothing of the shard but
//! its own files — `home.rs` (a topic homed here: epoch, offsets, history), `ring.rs` (the
//! bounded run both keep, and its bounds), `recent.rs` (a remote topic's run).
//!
//! Owns: one `Topic` per topic per shard, in a slab (stable keys, no resident slack: a slab's
//! spare capacity is never written, so its pages are never touched), found by name through an
//! index of `u32` slab keys (4 bytes a bucket, hashed with a per-shard random key, so a client
//! choosing topic names cannot aim them at one bucket). Subscriptions name their topic by slab
//! key, so delivery follows no hash.
//! Invariants: a topic's entry lives while anything refers to it — a subscription here, an
//! interest in a remote topic (`Recent`), or a home that has not gone idle — and a `Sub`'s topic
//! key is valid for the life of the `Sub`. A topic is `Home` on exactly the shard
//! `home_of(topic)`, `Remote` everywhere else.
//! Must not: decide when a topic goes (that is the sweeps' and `Subscribers`' job), or do I/O.

pub mod home;
pub mod recent;
pub mod ring;

use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;

use hashbrown::HashTable;
use slab::Slab;

use crate::shard::topics::home::HomeTopic;
use crate::shard::topics::recent::Recent;

/// One topic on one shard.
pub struct Topic {
    pub name: Arc<str>,
    /// Subscription keys on this shard.
    pub subs: SubList,
    pub side: Side,
}

pub enum Side {
    /// This shard is the topic's home: its positions, history and interest mask.
    Home(HomeTopic),
    /// Homed on another shard. While the interest lasts, the run of messages received here
    /// since the first subscriber's window (none before that window, or once a gap broke it).
    Remote(Option<Recent>),
}

impl Topic {
    pub fn home(&mut self) -> Option<&mut HomeTopic> {
        match &mut self.side {
            Side::Home(h) => Some(h),
            Side::Remote(_) => None,
        }
    }
}

/// Keys into a slab, with no allocation for the common one-element list (a topic with one
/// subscriber here, a stream with one subscription).
#[derive(Debug)]
pub enum SubList {
    One(u32),
    Many(Vec<u32>),
}

impl Default for SubList {
    fn default() -> Self {
        SubList::Many(Vec::new())
    }
}

impl SubList {
    pub fn as_slice(&self) -> &[u32] {
        match self {
            SubList::One(k) => std::slice::from_ref(k),
            SubList::Many(v) => v,
        }
    }

    pub fn len(&self) -> usize {
        self.as_slice().len()
    }

    pub fn is_empty(&self) -> bool {
        self.as_slice().is_empty()
    }

    pub fn first(&self) -> Option<usize> {
        self.as_slice().first().map(|&k| k as usize)
    }

    pub fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        self.as_slice().iter().map(|&k| k as usize)
    }

    pub fn push(&mut self, k: usize) {
        let k = key32(k);
        match self {
            SubList::Many(v) if v.is_empty() => *self = SubList::One(k),
            SubList::Many(v) => v.push(k),
            SubList::One(a) => *self = SubList::Many(vec![*a, k]),
        }
    }

    /// Removes `k` (order is not kept); false when it was not there.
    pub fn remove(&mut self, k: usize) -> bool {
        let k = key32(k);
        match self {
            SubList::One(a) if *a == k => *self = SubList::default(),
            SubList::One(_) => return false,
            SubList::Many(v) => {
                let Some(i) = v.iter().position(|&x| x == k) else {
                    return false;
                };
                v.swap_remove(i);
                if v.len() == 1 {
                    *self = SubList::One(v[0]);
                } else if v.len() * 4 < v.capacity() {
                    v.shrink_to_fit();
                }
            }
        }
        true
    }
}

/// A slab key as stored in a `SubList` or `Sub`: a shard holds far fewer than 2^32 of anything
/// (connections are capped by `--max-connections` and file descriptors).
pub fn key32(k: usize) -> u32 {
    u32::try_from(k).expect("slab key beyond u32")
}

#[derive(Default)]
pub struct Topics {
    index: HashTable<u32>,
    slots: Slab<Topic>,
    hasher: RandomState,
}

impl Topics {
    pub fn hash(&self, name: &str) -> u64 {
        self.hasher.hash_one(name)
    }

    /// The key of `name`'s entry, given its [`Topics::hash`].
    pub fn find_hashed(&self, hash: u64, name: &str) -> Option<usize> {
        let slots = &self.slots;
        self.index
            .find(hash, |&k| *slots[k as usize].name == *name)
            .map(|&k| k as usize)
    }

    pub fn find(&self, name: &str) -> Option<usize> {
        self.find_hashed(self.hash(name), name)
    }

    /// Adds a topic that is not in the table (`hash` is its name's [`Topics::hash`]).
    pub fn insert_hashed(&mut self, hash: u64, topic: Topic) -> usize {
        debug_assert!(self.find_hashed(hash, &topic.name).is_none());
        let k = self.slots.insert(topic);
        let (slots, hasher) = (&self.slots, &self.hasher);
        self.index.insert_unique(hash, key32(k), |&x| {
            hasher.hash_one(&*slots[x as usize].name)
        });
        k
    }

    pub fn get(&self, k: usize) -> Option<&Topic> {
        self.slots.get(k)
    }

    /// Every topic the shard knows, in slab order.
    pub fn all(&self) -> impl Iterator<Item = &Topic> + '_ {
        self.slots.iter().map(|(_, t)| t)
    }

    pub fn get_mut(&mut self, k: usize) -> Option<&mut Topic> {
        self.slots.get_mut(k)
    }

    pub fn remove(&mut self, k: usize) -> Option<Topic> {
        let name = &self.slots.get(k)?.name;
        let hash = self.hasher.hash_one(&**name);
        if let Ok(e) = self.index.find_entry(hash, |&x| x as usize == k) {
            e.remove();
        }
        self.slots.try_remove(k)
    }

    /// Keeps the topics `keep` says to keep; returns the removed ones.
    pub fn retain(&mut self, mut keep: impl FnMut(&mut Topic) -> bool) -> Vec<Topic> {
        let gone: Vec<usize> = self
            .slots
            .iter_mut()
            .filter_map(|(k, t)| (!keep(t)).then_some(k))
            .collect();
        gone.into_iter().filter_map(|k| self.remove(k)).collect()
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    fn remote(name: &str) -> Topic {
        Topic {
            name: Arc::from(name),
            subs: SubList::default(),
            side: Side::Remote(None),
        }
    }

    #[test]
    fn find_insert_remove_keep_keys_stable() {
        let mut t = Topics::default();
        let mut keys = Vec::new();
        for i in 0..1000 {
            let name = format!("topic-{i}");
            let h = t.hash(&name);
            assert_eq!(t.find_hashed(h, &name), None);
            keys.push(t.insert_hashed(h, remote(&name)));
        }
        assert_eq!(t.len(), 1000);
        for (i, &k) in keys.iter().enumerate() {
            assert_eq!(t.find(&format!("topic-{i}")), Some(k));
        }
        // Remove the even ones; the odd ones keep their keys and are still found.
        let gone = t.retain(|topic| {
            let n: usize = topic.name["topic-".len()..].parse().unwrap();
            n % 2 == 1
        });
        assert_eq!(gone.len(), 500);
        for (i, &k) in keys.iter().enumerate() {
            let found = t.find(&format!("topic-{i}"));
            assert_eq!(found, (i % 2 == 1).then_some(k), "topic-{i}");
        }
        assert!(t.remove(keys[1]).is_some());
        assert!(t.remove(keys[1]).is_none());
        assert_eq!(t.find("topic-1"), None);
        assert_eq!(t.len(), 499);
        // A home topic is reachable through `home()`; a remote one is not.
        let h = t.hash("h");
        let k = t.insert_hashed(
            h,
            Topic {
                name: Arc::from("h"),
                subs: SubList::default(),
                side: Side::Home(HomeTopic::new(1, Instant::now())),
            },
        );
        assert!(t.get_mut(k).unwrap().home().is_some());
        assert!(t.get_mut(keys[3]).unwrap().home().is_none());
    }

    #[test]
    fn sub_list_inline_one_then_many() {
        let mut l = SubList::default();
        assert!(l.is_empty());
        l.push(7);
        assert!(matches!(l, SubList::One(7)));
        l.push(9);
        l.push(11);
        assert_eq!(l.iter().collect::<Vec<_>>(), [7, 9, 11]);
        assert!(!l.remove(8));
        assert!(l.remove(7));
        assert_eq!(l.len(), 2);
        assert!(l.remove(11));
        assert!(matches!(l, SubList::One(9)), "back to inline: {l:?}");
        assert_eq!(l.first(), Some(9));
        assert!(l.remove(9));
        assert!(l.is_empty() && !l.remove(9));
    }

    #[test]
    fn sizes() {
        assert_eq!(std::mem::size_of::<SubList>(), 24);
        let topic = std::mem::size_of::<Topic>();
        eprintln!("topics::Topic: {topic} bytes");
        assert!(topic <= 96, "Topic = {topic} bytes");
    }
}

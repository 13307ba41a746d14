//! One ordered mailbox per channel: a channel's work is done one piece at a
//! time, in the order it arrived, and different channels in parallel.
//!
//! The node's event reader posts each piece of work (an event, or a
//! resync's "place this call") to the channel's mailbox and never waits: a
//! slow reader would be cut off by Asterisk. The first post to an empty
//! mailbox asks the caller to start a worker; the worker takes work until
//! the mailbox is empty, and the mailbox disappears with its last piece of
//! work, under the same lock, so a later post starts a new worker and never
//! races an old one. At most one worker per channel runs at any time.
//!
//! # Bounds
//! A mailbox is a `VecDeque` with no fixed capacity: only the work a
//! channel's state machine reads is posted (its `StasisStart`, `StasisEnd`
//! and `ChannelDestroyed`, and a resync's placement), a handful per channel
//! life, so its length is bounded by the channel's life, not by load. A
//! bounded queue would have to block the reader or hand overflow to a task
//! of its own, and an overflow task lets a later event overtake an earlier
//! one.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::sync::{Mutex, PoisonError};

/// Mailboxes by key (a node's channels).
#[derive(Debug)]
pub(crate) struct Mailboxes<K, W> {
    /// A key is present while its worker runs (or is about to start).
    boxes: Mutex<HashMap<K, VecDeque<W>>>,
}

impl<K: Eq + Hash + Clone, W> Default for Mailboxes<K, W> {
    fn default() -> Self {
        Self {
            boxes: Mutex::new(HashMap::new()),
        }
    }
}

impl<K: Eq + Hash + Clone, W> Mailboxes<K, W> {
    /// Posts `work` to `key`'s mailbox. True when the mailbox was empty:
    /// the caller must start a worker that drains it with [`Self::next`].
    #[must_use]
    pub(crate) fn post(&self, key: &K, work: W) -> bool {
        let mut boxes = self.boxes.lock().unwrap_or_else(PoisonError::into_inner);
        match boxes.entry(key.clone()) {
            Entry::Occupied(mut o) => {
                o.get_mut().push_back(work);
                false
            }
            Entry::Vacant(v) => {
                v.insert(VecDeque::from([work]));
                true
            }
        }
    }

    /// The next work for `key`'s worker, oldest first; `None` when there is
    /// none left, and then the mailbox is gone and the worker must end.
    pub(crate) fn next(&self, key: &K) -> Option<W> {
        let mut boxes = self.boxes.lock().unwrap_or_else(PoisonError::into_inner);
        let queue = boxes.get_mut(key)?;
        match queue.pop_front() {
            Some(w) => Some(w),
            None => {
                boxes.remove(key);
                None
            }
        }
    }

    /// Mailboxes with a worker (for tests and diagnostics).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.boxes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_worker_per_key_and_work_in_order() {
        let m: Mailboxes<&str, u32> = Mailboxes::default();
        assert!(m.post(&"a", 1), "the first post starts a worker");
        for i in 2..100 {
            assert!(!m.post(&"a", i), "a running worker takes the rest");
        }
        assert!(m.post(&"b", 1), "other keys have their own worker");
        let got: Vec<u32> = std::iter::from_fn(|| m.next(&"a")).collect();
        assert_eq!(got, (1..100).collect::<Vec<_>>());
        assert_eq!(m.len(), 1, "an emptied mailbox is gone");
        assert!(m.post(&"a", 7), "so the next post starts a new worker");
        assert_eq!(m.next(&"a"), Some(7));
        assert_eq!(m.next(&"a"), None);
        assert_eq!(m.next(&"a"), None);
    }
}

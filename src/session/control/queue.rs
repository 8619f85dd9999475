//! The ordered output toward one peer. Bytes can be queued behind a placeholder (the
//! rewritten `227`/`PORT` waiting for its data listener) or behind a barrier (a
//! completion reply waiting until the data connection has delivered every byte), so
//! what a peer receives keeps the order in which the session decided it.

use std::collections::VecDeque;

use super::ExpectationId;

#[derive(Debug)]
enum Slot {
    Ready(Vec<u8>),
    /// Filled with the announcement once the data listener for `id` exists.
    Placeholder(ExpectationId),
    /// Nothing after this leaves until the data connection `id` has closed.
    Barrier(ExpectationId),
    /// Nothing after this leaves until [`OutQueue::open_gate`]: the server's answer
    /// to ftpgate's `AUTH TLS` decides whether what follows goes in clear or through
    /// TLS, and what ftpgate sends first.
    Gate,
}

#[derive(Debug, Default)]
pub(super) struct OutQueue {
    slots: VecDeque<Slot>,
}

impl OutQueue {
    pub fn push(&mut self, bytes: Vec<u8>) {
        self.slots.push_back(Slot::Ready(bytes));
    }

    pub fn push_placeholder(&mut self, id: ExpectationId) {
        self.slots.push_back(Slot::Placeholder(id));
    }

    pub fn push_barrier(&mut self, id: ExpectationId) {
        self.slots.push_back(Slot::Barrier(id));
    }

    /// Fills the placeholder for `id`; `None` drops it. Returns whether it existed.
    pub fn fill(&mut self, id: ExpectationId, bytes: Option<Vec<u8>>) -> bool {
        let Some(pos) = self
            .slots
            .iter()
            .position(|s| matches!(s, Slot::Placeholder(p) if *p == id))
        else {
            return false;
        };
        match bytes {
            Some(bytes) => {
                if let Some(slot) = self.slots.get_mut(pos) {
                    *slot = Slot::Ready(bytes);
                }
            }
            None => {
                self.slots.remove(pos);
            }
        }
        true
    }

    pub fn push_gate(&mut self) {
        self.slots.push_back(Slot::Gate);
    }

    /// Opens the gate, putting `first` where it stood, ahead of what waited behind it.
    pub fn open_gate(&mut self, first: Vec<Vec<u8>>) {
        let Some(pos) = self.slots.iter().position(|s| matches!(s, Slot::Gate)) else {
            return;
        };
        self.slots.remove(pos);
        for (i, bytes) in first.into_iter().enumerate() {
            self.slots.insert(pos + i, Slot::Ready(bytes));
        }
    }

    pub fn lift_barrier(&mut self, id: ExpectationId) {
        self.slots
            .retain(|s| !matches!(s, Slot::Barrier(b) if *b == id));
    }

    /// Takes the bytes that may leave now, in order.
    pub fn drain_ready(&mut self) -> impl Iterator<Item = Vec<u8>> + '_ {
        std::iter::from_fn(|| match self.slots.front() {
            Some(Slot::Ready(_)) => match self.slots.pop_front() {
                Some(Slot::Ready(bytes)) => Some(bytes),
                _ => None,
            },
            _ => None,
        })
    }

    /// Takes every queued byte string, skipping placeholders and barriers: for a
    /// session that is closing and will not wait for them.
    pub fn drain_all(&mut self) -> impl Iterator<Item = Vec<u8>> + '_ {
        self.slots.drain(..).filter_map(|s| match s {
            Slot::Ready(bytes) => Some(bytes),
            _ => None,
        })
    }

    pub fn held_bytes(&self) -> usize {
        self.slots
            .iter()
            .map(|s| match s {
                Slot::Ready(b) => b.len(),
                _ => 0,
            })
            .sum()
    }
}

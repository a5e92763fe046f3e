//! A receiver's out-of-order segments, in a ring indexed by sequence: a segment waits in the
//! slot `seq mod capacity` until the gap before it is filled. The receiver accepts nothing past
//! its window, so the sequences held span less than the window's segments, and the ring is
//! sized for that span once (no tree node per segment, no search). Payload buffers come from
//! and go back to a pool, so steady state allocates nothing.

/// Out-of-order segments whose buffers are made with the ring: a first loss in steady state
/// allocates nothing.
const PREPARED: usize = 64;

pub(crate) struct Reorder {
    /// Slot `seq % len`: the segment of `seq` (its sequence kept, to tell it from another
    /// sequence of the same slot).
    slots: Vec<Option<(u64, Vec<u8>)>>,
    held: usize,
    /// Payload bytes of the buffers held (their capacity).
    held_bytes: usize,
    pool: Vec<Vec<u8>>,
}

impl Reorder {
    pub fn new() -> Reorder {
        Reorder {
            slots: Vec::new(),
            held: 0,
            held_bytes: 0,
            pool: Vec::new(),
        }
    }

    /// Segments held.
    pub fn len(&self) -> usize {
        self.held
    }

    /// Bytes of the ring and of the payload buffers held.
    pub fn bytes(&self) -> usize {
        self.slots.len() * size_of::<Option<(u64, Vec<u8>)>>() + self.held_bytes
    }

    /// Makes room for sequences spanning `span` (a larger ring keeps what it holds), and
    /// buffers of `segment` bytes for the first [`PREPARED`] segments held. Called from the
    /// transfer's first DATA on; later calls with no larger span change nothing.
    pub fn reserve(&mut self, span: usize, segment: usize) {
        if span <= self.slots.len() {
            return;
        }
        while self.pool.len() < span.min(PREPARED) {
            self.pool.push(Vec::with_capacity(segment));
        }
        let old = std::mem::take(&mut self.slots);
        self.slots.resize_with(span, || None);
        for (seq, buf) in old.into_iter().flatten() {
            let at = self.index(seq);
            self.slots[at] = Some((seq, buf));
        }
    }

    fn index(&self, seq: u64) -> usize {
        // `len` fits a u64 and the remainder fits a usize.
        (seq % self.slots.len() as u64) as usize
    }

    pub fn contains(&self, seq: u64) -> bool {
        !self.slots.is_empty() && matches!(self.slots[self.index(seq)], Some((s, _)) if s == seq)
    }

    /// Holds a copy of `payload` as segment `seq`; false (nothing held) when its slot is taken
    /// by another sequence (`seq` is beyond the span from the lowest one held) or there is no
    /// ring yet.
    pub fn insert(&mut self, seq: u64, payload: &[u8]) -> bool {
        if self.slots.is_empty() {
            return false;
        }
        let at = self.index(seq);
        if self.slots[at].is_some() {
            return false;
        }
        let mut buf = self.pool.pop().unwrap_or_default();
        buf.clear();
        buf.extend_from_slice(payload);
        self.held += 1;
        self.held_bytes += buf.capacity();
        self.slots[at] = Some((seq, buf));
        true
    }

    /// Whether segment `seq` could be held now (a ring, and its slot free).
    pub fn has_room(&self, seq: u64) -> bool {
        !self.slots.is_empty() && self.slots[self.index(seq)].is_none()
    }

    /// Takes segment `seq` out, if held; give its buffer back with [`Self::recycle`].
    pub fn take(&mut self, seq: u64) -> Option<Vec<u8>> {
        if !self.contains(seq) {
            return None;
        }
        let at = self.index(seq);
        let (_, buf) = self.slots[at].take()?;
        self.held -= 1;
        self.held_bytes -= buf.capacity();
        Some(buf)
    }

    /// A buffer [`Self::take`] gave out, for a later segment.
    pub fn recycle(&mut self, buf: Vec<u8>) {
        self.pool.push(buf);
    }

    /// Drops every segment held at `from` or beyond (a total learned late).
    pub fn drop_from(&mut self, from: u64) {
        self.retain(|seq| seq < from);
    }

    /// Drops every segment held.
    pub fn clear(&mut self) {
        self.retain(|_| false);
    }

    fn retain(&mut self, keep: impl Fn(u64) -> bool) {
        for slot in &mut self.slots {
            if slot.as_ref().is_some_and(|(seq, _)| !keep(*seq))
                && let Some((_, buf)) = slot.take()
            {
                self.held -= 1;
                self.held_bytes -= buf.capacity();
                self.pool.push(buf);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_wait_in_their_slot_and_come_out_in_order() {
        let mut r = Reorder::new();
        assert!(!r.insert(3, b"c"), "no ring before its shape is known");
        r.reserve(4, 1);
        assert!(r.insert(3, b"c"));
        assert!(r.insert(5, b"e"));
        assert!(!r.insert(7, b"g"), "7 shares 3's slot: beyond the span");
        assert!(r.contains(3) && r.contains(5) && !r.contains(7) && !r.contains(4));
        assert_eq!(r.len(), 2);
        assert_eq!(r.take(4), None);
        assert!(!r.has_room(7));
        let c = r.take(3).unwrap();
        assert_eq!(c, b"c");
        r.recycle(c);
        assert!(r.has_room(7));
        assert!(r.insert(7, b"g"), "3's slot is free again");
        r.reserve(16, 1);
        assert!(
            r.contains(5) && r.contains(7),
            "a larger ring keeps what it holds"
        );
        r.drop_from(6);
        assert!(r.contains(5) && !r.contains(7));
        r.clear();
        assert_eq!(r.len(), 0);
        assert_eq!(r.bytes(), 16 * size_of::<Option<(u64, Vec<u8>)>>());
    }
}

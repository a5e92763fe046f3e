//! Receive buffers kept back from the kernel for the sends that refer to them: a datagram a
//! node passes on unchanged leaves from the buffer it arrived in. Each buffer counts its
//! references (the receive being handled is one, each queued or in-flight send another) and
//! goes back to the provided-buffer ring when the last is released.

pub(crate) struct ReceiveHolds {
    /// References per buffer id.
    refs: Box<[u32]>,
    /// Buffers with at least one reference.
    held: usize,
    /// Most buffers held before new receives are copied instead: the rest keep the receive
    /// going.
    limit: usize,
}

impl ReceiveHolds {
    /// Counts for `buffers` receive buffers; at most half of them may be held by sends.
    pub fn new(buffers: u16) -> ReceiveHolds {
        ReceiveHolds {
            refs: vec![0; usize::from(buffers)].into_boxed_slice(),
            held: 0,
            limit: usize::from(buffers) / 2,
        }
    }

    /// Whether the datagrams of a new receive may be sent from its buffer: fewer than half of
    /// the buffers are held (else they are copied, and the kernel keeps enough to receive into).
    pub fn may_hold(&self) -> bool {
        self.held < self.limit
    }

    /// One more reference to buffer `bid` (ids beyond the ring are not counted).
    pub fn hold(&mut self, bid: u16) {
        if let Some(r) = self.refs.get_mut(usize::from(bid)) {
            if *r == 0 {
                self.held += 1;
            }
            *r += 1;
        }
    }

    /// One reference to buffer `bid` is done with; true when it was the last (the buffer goes
    /// back to the kernel now, exactly once). A buffer with no reference is left alone.
    pub fn release(&mut self, bid: u16) -> bool {
        match self.refs.get_mut(usize::from(bid)) {
            Some(r) if *r > 0 => {
                *r -= 1;
                if *r == 0 {
                    self.held -= 1;
                }
                *r == 0
            }
            _ => false,
        }
    }

    /// Buffers with at least one reference.
    pub fn held(&self) -> usize {
        self.held
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A buffer held by its receive and two sends goes back once, after the last release,
    /// whatever the order; another release changes nothing.
    #[test]
    fn a_buffer_goes_back_once_after_its_last_reference() {
        let mut holds = ReceiveHolds::new(8);
        holds.hold(3); // the receive
        holds.hold(3); // a send
        holds.hold(3); // another
        assert_eq!(holds.held(), 1);
        assert!(
            !holds.release(3),
            "the receive handled, two sends in flight"
        );
        assert!(!holds.release(3), "one send still in flight");
        assert!(holds.release(3), "the last send completed");
        assert_eq!(holds.held(), 0);
        assert!(!holds.release(3), "released once only");
    }

    /// A receive nothing refers to goes back as soon as it is handled.
    #[test]
    fn an_unreferenced_receive_goes_back_at_once() {
        let mut holds = ReceiveHolds::new(8);
        holds.hold(0);
        assert!(holds.release(0));
    }

    /// Half the buffers held: the next receives are copied rather than held.
    #[test]
    fn at_most_half_the_buffers_are_held() {
        let mut holds = ReceiveHolds::new(4);
        assert!(holds.may_hold());
        holds.hold(0);
        assert!(holds.may_hold());
        holds.hold(1);
        assert!(!holds.may_hold());
        assert!(holds.release(1));
        assert!(holds.may_hold());
    }

    /// An id beyond the ring (never handed out) is neither counted nor given back.
    #[test]
    fn an_unknown_buffer_is_ignored() {
        let mut holds = ReceiveHolds::new(4);
        holds.hold(9);
        assert_eq!(holds.held(), 0);
        assert!(!holds.release(9));
    }
}

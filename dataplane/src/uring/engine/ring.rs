//! The worker's ring: arming the multishot receive and the command eventfd, reaping
//! completions, and handing each receive's datagrams to the data plane.

use super::*;

impl Engine {
    pub(super) fn push(&mut self, entry: &squeue::Entry) {
        push_to(&mut self.ring, entry);
    }

    /// Queues the writes of the blocks local receivers' sinks handed over.
    pub(super) fn submit_file_writes(&mut self) {
        let ring = &mut self.ring;
        self.writes.submit(&mut |e| push_to(ring, e), file_tag);
    }

    pub(super) fn arm_recv(&mut self) {
        let entry = opcode::RecvMsgMulti::new(
            Fd(self.socket.as_raw_fd()),
            &raw const *self.recv_msg,
            self.bufs.group(),
        )
        .build()
        .user_data(TAG_RECV);
        self.push(&entry);
        self.recv_armed = true;
    }

    pub(super) fn arm_event(&mut self) {
        let entry = opcode::Read::new(
            Fd(self.link().eventfd()),
            (&raw mut *self.event_buf).cast(),
            size_of::<u64>() as u32,
        )
        .build()
        .user_data(TAG_EVENT);
        self.push(&entry);
        self.event_armed = true;
    }

    /// Handles every completion waiting, then returns the receive buffers and re-arms what
    /// finished.
    pub(super) fn reap(&mut self) {
        let mut cqes = std::mem::take(&mut self.cqes);
        cqes.extend(
            self.ring
                .completion()
                .map(|c| (c.user_data(), c.result(), c.flags())),
        );
        let mut recycled = false;
        self.last_received = false;
        // One time for the whole turn's receives.
        let now = self.shared.clock.now();
        // By index: sending early appends the completions it finds.
        let mut at = 0;
        while let Some(&(tag, result, flags)) = cqes.get(at) {
            at += 1;
            match tag & !SLOT_MASK {
                TAG_RECV => {
                    // Once per filling of the held half (a send that could not complete at
                    // once leaves the count as it was: no submit per receive then).
                    if !self.holds.may_hold() && self.holds.held() != self.held_at_early_send {
                        self.send_early(&mut cqes);
                        self.held_at_early_send = self.holds.held();
                    }
                    self.last_received = true;
                    recycled |= self.on_receive(result, flags, now);
                }
                TAG_SEND => recycled |= self.on_sent(tag & SLOT_MASK, result),
                TAG_EVENT => self.event_armed = false,
                TAG_FILE => {
                    let ring = &mut self.ring;
                    let slot = (tag & SLOT_MASK) as usize;
                    self.writes
                        .complete(slot, result, &mut |e| push_to(ring, e), file_tag);
                }
                _ => {}
            }
        }
        self.last_completions = cqes.len();
        cqes.clear();
        self.cqes = cqes;
        self.wake_owners();
        if recycled {
            self.bufs.publish();
        }
        if !self.recv_armed && !self.stopping {
            self.arm_recv();
        }
    }

    /// Half the receive buffers are held by sends not submitted or not reaped yet (a turn of
    /// many small receives): submits what is pending now and handles the send completions
    /// already in (a UDP send completes as it is submitted), so that the receives still to
    /// handle in this turn are sent from their buffers too. Other completions go to `cqes`.
    fn send_early(&mut self, cqes: &mut Vec<(u64, i32, u32)>) {
        self.flush();
        let _ = self.ring.submit();
        let mut recycled = false;
        loop {
            let Some(c) = self.ring.completion().next() else {
                break;
            };
            let tag = c.user_data();
            if tag & !SLOT_MASK == TAG_SEND {
                recycled |= self.on_sent(tag & SLOT_MASK, c.result());
            } else {
                cqes.push((tag, c.result(), c.flags()));
            }
        }
        if recycled {
            self.bufs.publish();
        }
        self.stats.early_sends += 1;
    }

    /// One receive completion; true if it used a buffer and that buffer is back with the
    /// kernel (no send refers to it).
    fn on_receive(&mut self, result: i32, flags: u32, now: Instant) -> bool {
        if !cqueue::more(flags) {
            self.recv_armed = false;
        }
        if result < 0 {
            if -result == libc::ENOBUFS {
                self.stats.recv_buffers_exhausted += 1;
            } else if -result != libc::ECANCELED {
                self.stats.recv_errors += 1;
            }
        }
        let Some(bid) = cqueue::buffer_select(flags) else {
            return false;
        };
        let bid = self.bufs.index(bid);
        // The receive holds its buffer while it is handled; each send of a datagram passed on
        // from it holds it too. With half the buffers held already, this one is copied from.
        let in_place = self.holds.may_hold();
        self.holds.hold(bid);
        let copies_before = self.data.payload_copies();
        self.handle_receive(bid, result, in_place, now);
        if !in_place {
            self.stats.rx_buffers_held_copies += self.data.payload_copies() - copies_before;
        }
        // The sends that refer to this buffer take their references before the receive lets go.
        self.take_outgoing();
        if self.holds.release(bid) {
            self.bufs.recycle(bid);
            return true;
        }
        false
    }

    /// Hands the datagrams of receive buffer `bid` to the node, with their place in the buffer
    /// when `in_place` (what the node passes on is then sent from there).
    fn handle_receive(&mut self, bid: u16, result: i32, in_place: bool, now: Instant) {
        let len = usize::try_from(result).unwrap_or(0);
        let buf = self.bufs.filled(bid, len);
        match RecvMsgOut::parse(buf, &self.recv_msg) {
            Ok(out) if !out.is_payload_truncated() && !out.is_name_data_truncated() => {
                let control = socket::parse_control(out.control_data());
                if let Some(o) = control.overflows {
                    self.stats.rx_queue_overflows = u64::from(o);
                }
                let payload = out.payload_data();
                let segment = control.segment.unwrap_or(payload.len()).max(1);
                let datagrams = payload.len().div_ceil(segment) as u64;
                self.stats.receives += 1;
                let from =
                    socket::source(out.name_data()).and_then(|source| match self.last_source {
                        Some((last, node)) if last == source => Some(node),
                        _ => {
                            let node = *self.by_socket.get(&source)?;
                            self.last_source = Some((source, node));
                            Some(node)
                        }
                    });
                let Some(from) = from else {
                    // An empty datagram is one datagram too (DNP counts it as too short).
                    let datagrams = payload
                        .chunks(segment)
                        .chain(payload.is_empty().then_some(payload));
                    for datagram in datagrams {
                        if self.data.validate_from_stranger(datagram) {
                            self.stats.unknown_source += 1;
                        }
                    }
                    return;
                };
                let offset = payload.as_ptr() as usize - buf.as_ptr() as usize;
                let batch = Received {
                    from,
                    payload,
                    segment,
                    // In place, what the node passes on is sent from this buffer.
                    token: in_place.then(|| input_token(bid, offset)),
                };
                let (workers, worker, hand_off) = (self.workers, self.worker, self.hand_off);
                let (stats, shared, to_wake) = (&mut self.stats, &self.shared, &mut self.to_wake);
                // A coalesced receive is handed over whole, with one `now`.
                self.data.handle_batch(
                    now,
                    batch,
                    |datagram| {
                        if workers <= 1 {
                            return true;
                        }
                        // Another worker's tree: handling it here would split the tree's
                        // state. What names no tree is handled by whichever worker has it.
                        match steer::tree_worker(datagram, workers) {
                            Some(owner) if usize::from(owner) != worker => {
                                let owner = usize::from(owner);
                                not_mine(hand_off, shared, stats, to_wake, owner, from, datagram);
                                false
                            }
                            _ => true,
                        }
                    },
                    |packet| shared.control.deliver(from, packet.bytes()),
                );
                self.stats.datagrams_received += datagrams.max(1);
            }
            _ => self.stats.recv_truncated += 1,
        }
    }

    /// Ends the turn's hand-offs. Each worker this turn handed datagrams to was woken at the
    /// first; one that has drained its queue since may have slept again with later ones in it,
    /// so a worker whose queue is not empty is woken once more. At most two eventfd writes per
    /// owner and turn, none per datagram.
    fn wake_owners(&mut self) {
        while self.to_wake != 0 {
            let owner = self.to_wake.trailing_zeros() as usize;
            self.to_wake &= self.to_wake - 1;
            if let Some(link) = self.shared.workers.get(owner)
                && link.hand_off.as_ref().is_some_and(|q| !q.is_empty())
            {
                link.wake();
            }
        }
    }

    /// Handles the datagrams of this worker's trees that other workers received (hand-off
    /// mode), as if received here; what is passed on is copied out of the hand-off buffer,
    /// which then serves the next hand-off.
    pub(super) fn take_handed_over(&mut self) {
        if !self.hand_off {
            return;
        }
        fn queue(engine: &Engine) -> Option<&crate::uring::shared::DatagramQueue> {
            engine.shared.workers[engine.worker].hand_off.as_ref()
        }
        let now = self.shared.clock.now();
        while let Some(handed) = queue(self).and_then(|q| q.pop()) {
            self.stats.taken_over += 1;
            if let Some(packet) = self.data.handle_datagram(now, handed.from, &handed.bytes) {
                self.shared.control.deliver(handed.from, packet.bytes());
            }
            self.take_outgoing();
            if let Some(q) = queue(self) {
                q.give_back(handed.bytes);
            }
        }
    }

    /// One send completion, done or failed: what it held is released. True if a receive buffer
    /// went back to the kernel.
    fn on_sent(&mut self, slot: u64, result: i32) -> bool {
        let (node, holds, bufs) = (&mut self.data, &mut self.holds, &mut self.bufs);
        let mut recycled = false;
        let datagrams = self.slots.complete(slot as usize, |holder| match holder {
            Holder::Owned(_) => {}
            Holder::Node(id) => node.release(id),
            Holder::Receive(bid) => {
                if holds.release(bid) {
                    bufs.recycle(bid);
                    recycled = true;
                }
            }
        });
        if result < 0 {
            self.stats.send_errors += 1;
            // A segmented send the path refuses (a device without UDP GSO, a segment above the
            // path's MTU) would fail every time: send one datagram per call from now on.
            if datagrams > 1 && matches!(-result, libc::EIO | libc::EINVAL | libc::EMSGSIZE) {
                self.slots.disable_gso();
                self.stats.gso_disabled = 1;
            }
        } else {
            self.stats.sends += 1;
            self.stats.datagrams_sent += datagrams;
        }
        recycled
    }
}

/// A datagram of worker `owner`'s tree that this worker received. Steered, it is a stray (a
/// segmented send mixing groups, or one that came before the steering program): dropped and
/// counted, RMTP repairs it. In hand-off mode it is copied into the owner's queue (a full one
/// drops and counts), and the owner is woken at its first of the turn (`to_wake` says which
/// were).
fn not_mine(
    hand_off: bool,
    shared: &Shared,
    stats: &mut EngineStats,
    to_wake: &mut u64,
    owner: usize,
    from: NodeAddr,
    datagram: &[u8],
) {
    let queue = shared.workers.get(owner).and_then(|w| w.hand_off.as_ref());
    match queue {
        Some(queue) if hand_off => {
            if queue.push(from, datagram) {
                stats.handed_over += 1;
                // The first of the turn wakes the owner at once, so that it drains its queue
                // while this turn goes on (a turn can hold thousands of datagrams).
                let bit = 1 << (owner % 64);
                if *to_wake & bit == 0 {
                    *to_wake |= bit;
                    if let Some(link) = shared.workers.get(owner) {
                        link.wake();
                    }
                }
            } else {
                stats.hand_off_full += 1;
            }
        }
        _ => stats.rx_other_worker += 1,
    }
}

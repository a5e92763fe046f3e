//! Flow control: a slow receiver bounds the sender; a vanished receiver is pruned.

mod common;

use common::*;
use std::time::Duration;

#[test]
fn slow_receiver_bounds_the_sender_on_every_step() {
    const EDGES: &[(u16, u16)] = &[(1, 2), (2, 3), (2, 4)];
    const MEMBERS: &[(u16, u16)] = &[(3, 1), (4, 1)];
    const SLOW_WINDOW: u64 = 32 * 1024;
    let data = content(1 << 20, 3);
    let mut spec = Spec::new(EDGES, MEMBERS, data.clone());
    spec.sender.initial_window = SLOW_WINDOW;
    spec.windows = &[(4, 1, SLOW_WINDOW)];
    let mut net = Net::new(spec);
    // The path to node 4 carries 2 MB/s; the rest is unlimited.
    net.rates.insert((2, 4), 2_000_000);
    let mut max_in_flight = 0;
    let mut steps = 0u64;
    let took = net.run(Duration::from_secs(60), |net| {
        steps += 1;
        let sent = net.sender().sent_offset();
        for (id, m, r) in net.receivers() {
            assert!(
                sent <= r.mab(),
                "step {steps}: sender at {sent} beyond receiver {id}/{m} window end {}",
                r.mab()
            );
        }
        let slow = &net.nodes[&4].receivers[&1];
        max_in_flight = max_in_flight.max(sent - slow.delivered());
    });
    let slow = &net.nodes[&4].receivers[&1];
    assert!(slow.is_complete());
    assert_eq!(slow.sink().data, data);
    assert_eq!(slow.stats().beyond_window, 0);
    let s = net.sender().stats();
    println!(
        "slow receiver (2 MB/s, {SLOW_WINDOW}-byte window): 1 MiB in {:.3}s virtual over {steps} \
         steps; max in flight {max_in_flight} bytes; {} window stalls",
        took.as_secs_f64(),
        s.window_stalls
    );
    assert!(max_in_flight <= SLOW_WINDOW);
    assert!(
        s.window_stalls > 10,
        "the window must have held the sender back"
    );
    // 1 MiB at 2 MB/s takes at least half a second: the sender went at the slow one's pace.
    assert!(took >= Duration::from_millis(500));
}

#[test]
fn receiver_that_leaves_routing_is_pruned_and_the_others_finish() {
    const EDGES: &[(u16, u16)] = &[(1, 2), (2, 3), (2, 4), (2, 5)];
    const MEMBERS: &[(u16, u16)] = &[(3, 1), (4, 1), (5, 1)];
    let data = content(2 << 20, 4);
    let mut spec = Spec::new(EDGES, MEMBERS, data.clone());
    spec.relay.mab_expire = Duration::from_millis(300);
    spec.seed = 5;
    let mut net = Net::new(spec);
    net.loss = 0.05;
    net.run_for(Duration::from_millis(50));
    let stuck_at = net.nodes[&5].receivers[&1].delivered();
    assert!(stuck_at < data.len() as u64);
    net.kill(5);
    net.run(Duration::from_secs(60), |_| {});
    for id in [3, 4] {
        let r = &net.nodes[&id].receivers[&1];
        assert!(r.is_complete(), "receiver on {id}");
        assert_eq!(r.sink().data, data);
    }
    assert!(!net.nodes[&5].receivers[&1].is_complete());
    net.run_for(Duration::from_millis(500));
    let relay2 = net.nodes[&2].relay.stats();
    println!(
        "node 5 cut off at {stuck_at} bytes; others finished at {}; relay 2 pruned {}",
        net.now, relay2.prunes
    );
    assert_eq!(relay2.prunes, 1);
    assert!(
        net.sender().is_complete(),
        "the dead receiver no longer holds the sender"
    );
}

//! `burghers send`: host a node and multicast one file from it.

use crate::args::{Millis, parse_group, parse_millis, parse_millis_flag, parse_node, parse_size};
use crate::host::{Host, NodeArgs};
use crate::progress::{Progress, mib, rate};
use control::rap::ServiceEntry;
use control::{GroupAddr, NodeAddr};
use dataplane::host::{SendHandle, SendOptions, counter};
use dataplane::node::{RAP_SERVER_SID, service_entry};
use dataplane::rmtp::FileSource;
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(clap::Args)]
#[command(after_help = "\
Starts node --addr of the topology (as `burghers node` does, control socket included), then
multicasts FILE to the group with RMTP and announces it over RAP (see `burghers services`).
Receivers are `burghers recv` processes on other nodes; start them first. Their joins reach
this node once it is up, so it waits --settle-ms (and, with --wait-branches, until those
neighbours joined) before the first byte: a receiver that joins later gets only what the
sender can still repair. It exits 0 once every receiver in
the group's tree holds the whole file (after a short linger for the last acknowledgements),
or non-zero if interrupted, if --timeout passes first, or if every receiver failed or left
(no acknowledgement for 5 s).

Groups are given by index (1 is group 0xF001), as g1, or as 0xF001.

Examples:
  burghers send movie.mkv --group 1 --topology topologies/tree7.toml --addr 1
  burghers send big.iso -g g2 -t net.toml -a 3 --rate 20M --wait-branches 2,5")]
pub struct SendArgs {
    /// The file to multicast.
    pub file: PathBuf,
    /// The group to send to: index (1 = 0xF001), g1 or 0xF001.
    #[arg(long, short, value_name = "G", value_parser = parse_group)]
    pub group: GroupAddr,
    #[command(flatten)]
    pub node: NodeArgs,
    /// Name announced to receivers [default: FILE's name].
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// Pace data and repairs to this many bytes per second (e.g. 20M) [default: as fast as
    /// the receivers' windows allow].
    #[arg(long, value_name = "BYTES", value_parser = parse_size)]
    pub rate: Option<u64>,
    /// Start sending only once these neighbours (or this node's own clients, by its address)
    /// have joined the group's tree, e.g. the children of the root.
    #[arg(long, value_name = "NODES", value_delimiter = ',', value_parser = parse_node)]
    pub wait_branches: Vec<NodeAddr>,
    /// Time for receivers to join before the first byte (after --wait-branches, if given)
    /// [default: three GMP refresh periods of the topology].
    #[arg(long = "settle-ms", value_name = "MS", value_parser = parse_millis)]
    pub settle: Option<Duration>,
    /// Give up (exit non-zero) if not every receiver has the file after this long.
    #[arg(long = "timeout-ms", value_name = "MS", value_parser = parse_millis)]
    pub timeout: Option<Duration>,
    /// How long to stay after completion, so the last acknowledgements settle.
    #[arg(long = "linger-ms", value_name = "MS", value_parser = parse_millis_flag,
          default_value_t = Millis(control::settings::host::SEND_LINGER))]
    pub linger: Millis,
    /// No progress output, only the summary.
    #[arg(long, short)]
    pub quiet: bool,
}

pub fn run(args: SendArgs) -> Result<(), String> {
    // Check the file before starting anything.
    let source = FileSource::open(&args.file)
        .map_err(|e| format!("cannot read {}: {e}", args.file.display()))?;
    let name = match &args.name {
        Some(n) => n.clone(),
        None => args
            .file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .ok_or_else(|| format!("{} has no file name; give --name", args.file.display()))?,
    };
    let mut host = Host::start(&args.node)?;
    let me = host.addr();
    let deadline = args.timeout.map(|t| Instant::now() + t);
    // Announced first: receivers that learn the name over RAP join only once they have it,
    // and the branches waited for may be theirs.
    let announced = match pre_announce(&host, &args, &name, &source) {
        Ok(entry) => entry,
        Err(e) => {
            host.stop();
            return Err(e);
        }
    };
    if !args.wait_branches.is_empty()
        && let Err(e) = wait_for_branches(&mut host, &args, deadline)
    {
        host.stop();
        return Err(e);
    }
    // A receiver joins once it has a route to this node, so trees form only now that this
    // node is up; one that joins after the first bytes can only be repaired from what the
    // sender still holds.
    let settle = args
        .settle
        .unwrap_or(host.topology.network.timers.gmp_refresh * 3);
    if !settle.is_zero() && host.wait(settle) {
        host.stop();
        return Err("interrupted before the transfer started".into());
    }
    let options = SendOptions {
        rate: args.rate,
        // Hashed once, for the announcement ahead.
        content_hash: Some(announced.hash),
        ..SendOptions::default()
    };
    let handle = match host.node.send(args.group, &name, Box::new(source), options) {
        Ok(h) => h,
        Err(e) => {
            host.stop();
            return Err(format!("cannot send {name}: {e}"));
        }
    };
    let entry = handle.entry().clone();
    let hash: String = entry
        .hash
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect();
    println!(
        "node {me} sends {name} ({} bytes, BLAKE3 {hash}...) to {}",
        entry.size, args.group
    );
    tracing::info!(name, size = entry.size, group = %args.group, "sending");
    {
        let h = handle.clone();
        let label = format!("send {} {name}", args.group);
        host.handler
            .reporters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Box::new(move || describe(&label, &h)));
    }
    let started = Instant::now();
    let mut progress = Progress::new(&format!("send {name}"), args.quiet);
    let outcome = loop {
        let p = handle.progress();
        progress.update(
            p.acked,
            Some(p.total),
            &format!(
                "sent {}, {} retransmissions, {} NACKs",
                mib(p.sent),
                p.retransmissions,
                p.nacks
            ),
        );
        if p.complete {
            break Ok(());
        }
        if let Some(why) = &p.failed {
            break Err(format!("transfer failed: {why}"));
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            break Err("timed out before every receiver had the file".to_string());
        }
        // Woken at the completion (or the end), so the time measured is exact.
        handle.wait(Duration::from_millis(100));
        if host.wait(Duration::ZERO) {
            break Err("interrupted before every receiver had the file".to_string());
        }
    };
    let took = started.elapsed();
    progress.finish();
    if outcome.is_ok() {
        // The server keeps sending SPMs for a moment so receivers see that everyone is done.
        host.wait(args.linger.0);
    }
    let p = handle.progress();
    let stats = host.stop();
    let relay = |n: &str| counter(&stats, &format!("rmtp.relay.{n}")).unwrap_or(0);
    println!(
        "{} {name} ({} bytes) to {}: {:.2}s, {}; {} retransmissions, {} NACKs reached the sender, {} repairs from this node's cache",
        if outcome.is_ok() {
            "sent"
        } else {
            "did not finish"
        },
        p.total,
        args.group,
        took.as_secs_f64(),
        rate(p.total, took),
        p.retransmissions,
        p.nacks,
        relay("repairs_from_cache"),
    );
    println!(
        "summary: state={} bytes={} acked={} seconds={:.3} retransmissions={} nacks={}",
        if outcome.is_ok() {
            "complete"
        } else {
            "incomplete"
        },
        p.total,
        p.acked,
        took.as_secs_f64(),
        p.retransmissions,
        p.nacks
    );
    outcome
}

/// Waits until each of `--wait-branches` is downstream of (or a local member at) this node in
/// the group's tree.
fn wait_for_branches(
    host: &mut Host,
    args: &SendArgs,
    deadline: Option<Instant>,
) -> Result<(), String> {
    let me = host.addr();
    let list: Vec<String> = args.wait_branches.iter().map(|b| b.to_string()).collect();
    println!(
        "node {me} waits for {} to join {}",
        list.join(", "),
        args.group
    );
    loop {
        let joined = host
            .node
            .multicast()
            .lookup(args.group, me)
            .is_some_and(|e| {
                args.wait_branches
                    .iter()
                    .all(|b| e.downstream.contains(b) || (*b == me && !e.local_members.is_empty()))
            });
        if joined {
            return Ok(());
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Err(format!(
                "timed out waiting for {} to join {}",
                list.join(", "),
                args.group
            ));
        }
        if host.wait(Duration::from_millis(50)) {
            return Err("interrupted before the transfer started".into());
        }
    }
}

/// Puts the transfer's RAP entry (what `RunningNode::send` will announce) on this node's RAP
/// server ahead of the first byte, and returns it.
fn pre_announce(
    host: &Host,
    args: &SendArgs,
    name: &str,
    source: &FileSource,
) -> Result<ServiceEntry, String> {
    let mtu = host.topology.network.mtu;
    let entry = service_entry(host.addr(), mtu, args.group, name, source, None);
    host.node
        .set_rap_services(RAP_SERVER_SID, vec![entry.clone()])
        .map_err(|e| format!("cannot announce {name}: {e}"))?;
    Ok(entry)
}

fn describe(label: &str, h: &SendHandle) -> String {
    let p = h.progress();
    format!(
        "{label}: total {} sent {} acked {} retransmissions {} nacks {} complete {}",
        p.total, p.sent, p.acked, p.retransmissions, p.nacks, p.complete
    )
}

//! `burghers recv`: host a node and receive one multicast file on it.

use crate::args::{
    Millis, parse_group, parse_millis_flag, parse_node, parse_size, parse_size_or_zero,
};
use crate::host::{Host, NodeArgs};
use crate::progress::{Progress, rate};
use control::rap::ServiceEntry;
use control::settings;
use control::{GroupAddr, NodeAddr};
use dataplane::host::{RapRequestError, ReceiveHandle, ReceiveOptions, ReceiveState};
use dataplane::node::RAP_SERVER_SID;
use dataplane::rmtp::{FileSink, TransferShape};
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(clap::Args)]
#[command(after_help = "\
Starts node --addr of the topology (as `burghers node` does, control socket included), joins
the group's tree toward --sender and writes the transfer to DIR/NAME.partial, renamed to
DIR/NAME only once every byte is there and its BLAKE3 matches the sender's. Without --name it
first asks the sender over RAP what it sends to the group (so the sender must be running);
with --name it joins at once and can be started before the sender.

It exits 0 with the verified file, or non-zero when the transfer fails (the sender silent or
unreachable for --sender-timeout-ms, interrupted, ...), leaving only NAME.partial.

Groups are given by index (1 is group 0xF001), as g1, or as 0xF001.

Examples:
  burghers recv --group 1 --sender 1 --out /tmp/in --topology topologies/tree7.toml --addr 4
  burghers recv -g 1 -s 1 -o in -t net.toml -a 7 --name movie.mkv --sender-timeout-ms 5000")]
pub struct RecvArgs {
    /// The group: index (1 = 0xF001), g1 or 0xF001.
    #[arg(long, short, value_name = "G", value_parser = parse_group)]
    pub group: GroupAddr,
    /// The node that sends to the group.
    #[arg(long, short, value_name = "N", value_parser = parse_node)]
    pub sender: NodeAddr,
    /// Directory to write the file into (created if need be).
    #[arg(long, short, value_name = "DIR")]
    pub out: PathBuf,
    #[command(flatten)]
    pub node: NodeArgs,
    /// The file's name, to join without asking the sender first.
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// Service id of the local RMTP client.
    #[arg(long, default_value_t = 100)]
    pub sid: u16,
    /// Fail when the sender has been unreachable or silent this long.
    #[arg(long = "sender-timeout-ms", value_name = "MS", value_parser = parse_millis_flag,
          default_value_t = Millis(settings::receiver::SENDER_TIMEOUT))]
    pub sender_timeout: Millis,
    /// How long to wait for the sender's announcement (without --name).
    #[arg(long = "announce-timeout-ms", value_name = "MS", value_parser = parse_millis_flag,
          default_value_t = Millis(settings::host::ANNOUNCE_TIMEOUT))]
    pub announce_timeout: Millis,
    /// Bytes accepted ahead of what is written (the flow-control window), at most what the
    /// engine can hold in a burst (threaded: its buffers of 100 segments; uring: the socket's
    /// receive buffer) [default: 2MiB, within those limits].
    #[arg(long, value_name = "BYTES", value_parser = parse_size)]
    pub window: Option<u64>,
    /// Drop the file's pages from the page cache this far behind the writes, and all of them
    /// once it is synced: a bulk transfer then leaves the machine's cache as it was. 0 keeps
    /// them cached (quicker to read right after).
    #[arg(long = "drop-behind", value_name = "BYTES", value_parser = parse_size_or_zero,
          default_value_t = settings::receiver::DROP_BEHIND)]
    pub drop_behind: u64,
    /// Replace DIR/NAME if it exists.
    #[arg(long)]
    pub overwrite: bool,
    /// No progress output, only the summary.
    #[arg(long, short)]
    pub quiet: bool,
}

pub fn run(args: RecvArgs) -> Result<(), String> {
    std::fs::create_dir_all(&args.out)
        .map_err(|e| format!("cannot create {}: {e}", args.out.display()))?;
    let mut host = Host::start(&args.node)?;
    let result = receive(&mut host, &args);
    host.stop();
    result
}

fn receive(host: &mut Host, args: &RecvArgs) -> Result<(), String> {
    let me = host.addr();
    let (name, entry) = match &args.name {
        Some(n) => (n.clone(), None),
        None => {
            let e = announcement(host, args)?;
            (e.name.clone(), Some(e))
        }
    };
    let final_path = args.out.join(&name);
    if final_path.exists() && !args.overwrite {
        return Err(format!(
            "{} exists (remove it, or pass --overwrite)",
            final_path.display()
        ));
    }
    let sink = FileSink::with_drop_behind(&args.out, &name, args.drop_behind)
        .map_err(|e| format!("cannot write {name} in {}: {e}", args.out.display()))?;
    let partial = sink.partial_path().to_path_buf();
    let final_sync = sink.final_sync();
    let defaults = ReceiveOptions::default();
    // The announcement fixes the transfer's shape: SPMs that disagree are refused.
    let announced = entry.as_ref().map(|e| TransferShape {
        segment_size: e.segment_size,
        total: e.size,
        hash: e.hash,
    });
    let options = ReceiveOptions {
        window: args.window.unwrap_or(defaults.window),
        sender_timeout: args.sender_timeout.0,
        announced,
    };
    let handle = host
        .node
        .receive(args.group, args.sender, args.sid, Box::new(sink), options)
        .map_err(|e| format!("cannot receive {name}: {e}"))?;
    println!(
        "node {me} receives {name} from node {} on {} into {}",
        args.sender,
        args.group,
        args.out.display()
    );
    tracing::info!(name, group = %args.group, sender = %args.sender, "receiving");
    {
        let h = handle.clone();
        let label = format!("recv {} {name}", args.group);
        host.handler
            .reporters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Box::new(move || describe(&label, &h)));
    }

    let joined = Instant::now();
    let mut first_data: Option<Instant> = None;
    let mut progress = Progress::new(&format!("recv {name}"), args.quiet);
    let outcome = loop {
        // The handle wakes this at the first byte and at the end, so both instants are exact
        // (the time a transfer took is measured from them); the progress line every 100 ms.
        let p = if first_data.is_none() {
            let p = handle.wait_started(Duration::from_millis(100));
            if p.delivered > 0 {
                first_data = Some(Instant::now());
            }
            p
        } else {
            handle.wait(Duration::from_millis(100));
            handle.progress()
        };
        progress.update(
            p.delivered,
            p.total,
            &format!("{} repairs, {} NACKs", p.repairs, p.nacks),
        );
        match p.state {
            ReceiveState::Complete => break Ok(()),
            ReceiveState::Failed(why) => break Err(why),
            ReceiveState::Receiving => {}
        }
        if host.wait(Duration::ZERO) {
            handle.abort();
            match handle.wait(Duration::from_secs(5)) {
                ReceiveState::Complete => break Ok(()),
                _ => break Err("interrupted".to_string()),
            }
        }
    };
    progress.finish();
    let done = Instant::now();
    let took = done - first_data.unwrap_or(joined);
    let p = handle.progress();
    if outcome.is_ok() {
        linger(host, args);
    }
    // Part of `took`: the disk catching up before the verified file is renamed.
    let synced = final_sync.took().unwrap_or_default();
    let summary = |state: &str| {
        format!(
            "summary: state={state} bytes={} seconds={:.3} sync_seconds={:.3} repairs={} \
             nacks={} crc_failures={}",
            p.delivered,
            took.as_secs_f64(),
            synced.as_secs_f64(),
            p.repairs,
            p.nacks,
            p.crc_failures
        )
    };
    match outcome {
        Ok(()) => {
            println!(
                "received {} ({} bytes) from node {} in {:.2}s, {} ({:.2}s of it the final sync to the disk); {} repairs, {} NACKs, {} CRC failures; BLAKE3 verified{}",
                final_path.display(),
                p.delivered,
                args.sender,
                took.as_secs_f64(),
                rate(p.delivered, took),
                synced.as_secs_f64(),
                p.repairs,
                p.nacks,
                p.crc_failures,
                // The sink checked the bytes it wrote against the announced hash: the
                // receiver refuses a finishing SPM with another.
                if entry.is_some() {
                    " (equal to the announcement)"
                } else {
                    ""
                }
            );
            println!("{}", summary("complete"));
            Ok(())
        }
        Err(why) => {
            println!("{}", summary("failed"));
            let of = p.total.map_or(String::new(), |t| format!(" of {t}"));
            Err(format!(
                "transfer of {name} failed: {why}; kept {} ({} bytes{of})",
                partial.display(),
                p.delivered
            ))
        }
    }
}

/// Asks the sender over RAP what it sends to the group, until it says or time runs out.
fn announcement(host: &mut Host, args: &RecvArgs) -> Result<ServiceEntry, String> {
    let deadline = Instant::now() + args.announce_timeout.0;
    println!(
        "node {} asks node {} what it sends to {}",
        host.addr(),
        args.sender,
        args.group
    );
    loop {
        let wait = deadline
            .saturating_duration_since(Instant::now())
            .min(Duration::from_secs(1));
        match host
            .node
            .request_services(args.sender, RAP_SERVER_SID, wait)
        {
            Ok(list) => {
                if let Some(e) = list
                    .into_iter()
                    .find(|e| e.group == args.group && e.sender == args.sender)
                {
                    println!(
                        "node {} announces {} ({} bytes) on {}",
                        args.sender, e.name, e.size, args.group
                    );
                    return Ok(e);
                }
                // Announced nothing for this group yet: ask again in a moment.
                if host.wait(Duration::from_millis(200)) {
                    return Err("interrupted while waiting for the announcement".into());
                }
            }
            Err(RapRequestError::Stopped) => {
                return Err("the node stopped while asking for the announcement".into());
            }
            Err(RapRequestError::TimedOut) => {}
        }
        if host.shutdown.is_raised() {
            return Err("interrupted while waiting for the announcement".into());
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "node {} announced nothing on {} within {:.0}s (is `burghers send` running there? or pass --name)",
                args.sender,
                args.group,
                args.announce_timeout.0.as_secs_f64()
            ));
        }
    }
}

/// After completion the client stays in the tree until the sender shows that everyone is done
/// (so its last acknowledgement is not cut off); wait for it to leave, within reason.
fn linger(host: &mut Host, args: &RecvArgs) {
    let limit = Instant::now() + args.sender_timeout.0.min(Duration::from_secs(10));
    while Instant::now() < limit {
        let member = host
            .node
            .multicast()
            .lookup(args.group, args.sender)
            .is_some_and(|e| e.local_members.contains(&args.sid));
        if !member || host.wait(Duration::from_millis(50)) {
            return;
        }
    }
}

fn describe(label: &str, h: &ReceiveHandle) -> String {
    let p = h.progress();
    format!(
        "{label}: delivered {} total {} repairs {} nacks {} crc_failures {} state {:?}",
        p.delivered,
        p.total.map_or("?".to_string(), |t| t.to_string()),
        p.repairs,
        p.nacks,
        p.crc_failures,
        p.state
    )
}

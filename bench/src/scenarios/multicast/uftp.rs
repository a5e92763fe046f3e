//! uftp (UDP-based FTP with multicast, Debian's `uftp` package) as the external reference: one
//! `uftpd` per receiver and `uftp` on the sender, each in its own namespace of a private bridged
//! network ([`Network`]), the sender naming its receivers (`-H`, a closed group) and sending at
//! `-R` Kbit/s (-1: as fast as the link takes, repairing in further passes). The file, the
//! receivers and the loss per packet are the transfer's; the loss here is the same for both
//! directions of every endpoint's link, as on the engines' links.

use super::netns::{self, Network};
use super::{Figures, Transfer};
use crate::machine::children_cpu;
use crate::runner::{Sample, Stop, System};
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

pub const NAME: &str = "uftp";
const FILE_NAME: &str = "payload.bin";

/// What this machine offers uftp.
pub struct Availability {
    pub uftp: PathBuf,
    pub uftpd: PathBuf,
    pub version: Option<String>,
    nft: bool,
}

impl Availability {
    /// uftp and uftpd installed, `ip` present, root (for the namespaces) and a namespace that
    /// can be made; else why not, with what to do.
    pub fn probe() -> Result<Availability, String> {
        let missing = "uftp is not installed (Debian/Ubuntu: `apt-get install uftp`)";
        let uftp = find_program("uftp").ok_or(missing)?;
        let uftpd = find_program("uftpd").ok_or(missing)?;
        find_program("ip").ok_or("no `ip` command (iproute2) to make network namespaces")?;
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Err("making network namespaces needs root (run the benchmark as root)".into());
        }
        let probe = format!("bench-mc{}-probe", std::process::id());
        netns::ip(&["netns", "add", &probe])
            .map_err(|e| format!("cannot make a network namespace: {e}"))?;
        let _ = netns::ip(&["netns", "del", &probe]);
        Ok(Availability {
            version: version(),
            uftp,
            uftpd,
            nft: find_program("nft").is_some(),
        })
    }

    pub fn describe(&self) -> String {
        format!(
            "{} (version {}), in network namespaces{}",
            self.uftp.display(),
            self.version.as_deref().unwrap_or("unknown"),
            if self.nft {
                ""
            } else {
                "; no nft: lossless transfers only"
            }
        )
    }

    /// Whether uftp can run a transfer with `loss`.
    pub fn can_run(&self, loss: f64) -> Result<(), String> {
        if loss > 0.0 && !self.nft {
            return Err(
                "not compared: its loss needs nftables (`apt-get install nftables`)".into(),
            );
        }
        Ok(())
    }
}

/// The sender's command line, for the record.
pub fn describe_command(rate: i64) -> String {
    format!("uftp -R {rate} -H <receivers> FILE; uftpd -d -D DIR on each receiver")
}

fn find_program(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// The installed package's version (dpkg's), when it can tell.
fn version() -> Option<String> {
    let out = std::process::Command::new("dpkg-query")
        .args(["-W", "-f=${Version}", "uftp"])
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let v = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (out.status.success() && !v.is_empty()).then_some(v)
}

pub struct Run<'a> {
    pub availability: &'a Availability,
    pub rate: i64,
    pub transfer: &'a Transfer,
    pub stop: Stop,
}

impl System for Run<'_> {
    fn name(&self) -> String {
        NAME.to_string()
    }

    fn limit(&self) -> Option<String> {
        Some(super::fanout::NAME.to_string())
    }

    fn measure(&mut self) -> io::Result<Sample> {
        let t = self.transfer;
        let dir = tempfile::Builder::new()
            .prefix("bench-multicast-uftp-")
            .tempdir()?;
        let net = Network::create(t.receivers + 1, t.loss)?;
        let cpu_before = children_cpu();
        let mut daemons = Vec::new();
        let outcome = self.transfer_in(&net, dir.path(), &mut daemons);
        for d in &mut daemons {
            stop_daemon(d);
        }
        let cpu = children_cpu().saturating_sub(cpu_before);
        drop(net);
        let mut figures = outcome?;
        figures.cpu = cpu;
        Ok(figures.sample(t))
    }
}

impl Run<'_> {
    fn transfer_in(
        &self,
        net: &Network,
        dir: &Path,
        daemons: &mut Vec<Child>,
    ) -> io::Result<Figures> {
        let t = self.transfer;
        let deadline = Instant::now() + t.deadline();
        for i in 1..=t.receivers {
            let into = dir.join(format!("r{i}"));
            std::fs::create_dir_all(&into)?;
            let log = File::create(dir.join(format!("uftpd{i}.log")))?;
            let daemon = net
                .command(i, &self.availability.uftpd)
                .arg("-d")
                .arg("-D")
                .arg(&into)
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log)
                .spawn()?;
            daemons.push(daemon);
        }
        // A daemon that has loaded its key listens; the sender's announcement must find all.
        for i in 1..=t.receivers {
            let log = dir.join(format!("uftpd{i}.log"));
            while !std::fs::read_to_string(&log).is_ok_and(|l| l.contains("key")) {
                if let Some(status) = daemons[i - 1].try_wait()? {
                    return Err(io::Error::other(format!(
                        "uftpd {i} ended at start ({status}): {}",
                        last_line(&log)
                    )));
                }
                self.wait(deadline, "starting uftpd")?;
            }
        }
        let hosts: Vec<String> = (1..=t.receivers)
            .map(|i| Network::address(i).to_string())
            .collect();
        let sent_before = net.packets_sent(0)?;
        t.warm_pages()?;
        let output = dir.join("uftp.log");
        let log = File::create(&output)?;
        let mut sender = net
            .command(0, &self.availability.uftp)
            .args(["-R", &self.rate.to_string(), "-H", &hosts.join(",")])
            .arg(&t.source)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        let status = loop {
            if let Some(status) = sender.try_wait()? {
                break status;
            }
            if let Err(e) = self.wait(deadline, "moving the file") {
                let _ = sender.kill();
                let _ = sender.wait();
                return Err(e);
            }
        };
        let sent = net.packets_sent(0)?.saturating_sub(sent_before);
        let text = std::fs::read_to_string(&output)?;
        let report = Report::parse(&text);
        if !status.success() || report.completed.len() < t.receivers {
            // uftp's verdict on each receiver, spaces squeezed.
            let hosts: Vec<String> = text
                .lines()
                .filter(|l| l.trim_start().starts_with("Host:"))
                .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
                .collect();
            return Err(io::Error::other(format!(
                "uftp ({status}) completed {} of {} receivers: {}",
                report.completed.len(),
                t.receivers,
                if hosts.is_empty() {
                    last_line(&output)
                } else {
                    hosts.join("; ")
                }
            )));
        }
        for i in 1..=t.receivers {
            t.verify(&dir.join(format!("r{i}")).join(FILE_NAME))?;
        }
        let blocks = report.blocks.max(1) as f64;
        Ok(Figures {
            slowest_receiver: report
                .completed
                .iter()
                .copied()
                .fold(Duration::ZERO, Duration::max),
            last_copy: report.elapsed,
            cpu: Duration::ZERO,
            // Every packet past the file's blocks was a repair (or one of a few control
            // packets): an upper bound on the share.
            repair_share: Some((sent as f64 - blocks).max(0.0) / blocks),
            nack_aggregation: None,
            counters: vec![
                ("receiver_nak_blocks", report.nak_blocks as f64),
                ("sender_packets", sent as f64),
            ],
        })
    }

    fn wait(&self, deadline: Instant, what: &str) -> io::Result<()> {
        if self.stop.requested() {
            return Err(io::Error::other(format!("interrupted while {what}")));
        }
        if Instant::now() >= deadline {
            return Err(io::Error::other(format!("gave up while {what}")));
        }
        std::thread::sleep(Duration::from_millis(10));
        Ok(())
    }
}

/// SIGTERM (uftpd's clean stop), then SIGKILL if it lingers; waits for it either way.
fn stop_daemon(daemon: &mut Child) {
    if let Ok(pid) = libc::pid_t::try_from(daemon.id()) {
        // SAFETY: signalling our own child, which has not been waited for.
        unsafe { libc::kill(pid, libc::SIGTERM) };
    }
    let grace = Instant::now() + Duration::from_secs(3);
    while Instant::now() < grace {
        if let Ok(Some(_)) = daemon.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = daemon.kill();
    let _ = daemon.wait();
}

fn last_line(path: &Path) -> String {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|t| {
            t.lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .map(str::to_string)
        })
        .unwrap_or_else(|| "no output".into())
}

/// What uftp's own report says.
#[derive(Debug, Default, PartialEq)]
struct Report {
    /// Each receiver's time, for those that completed.
    completed: Vec<Duration>,
    elapsed: Duration,
    blocks: u64,
    /// Blocks the receivers asked for again, summed over receivers and passes.
    nak_blocks: u64,
}

impl Report {
    fn parse(text: &str) -> Report {
        let mut r = Report::default();
        let seconds = |s: &str| s.trim().parse::<f64>().ok().map(Duration::from_secs_f64);
        for line in text.lines() {
            let line = line.trim();
            if let Some(rest) = line.strip_prefix("Host:")
                && rest.contains("Status: Completed")
                && let Some(t) = rest
                    .split_once("time:")
                    .and_then(|(_, t)| seconds(t.trim().trim_end_matches("seconds")))
            {
                r.completed.push(t);
            } else if let Some(rest) = line.strip_prefix("Total elapsed time:") {
                r.elapsed = seconds(rest.trim().trim_end_matches("seconds")).unwrap_or_default();
            } else if let Some(rest) = line.strip_prefix("Bytes:") {
                r.blocks = rest
                    .split_once("Blocks:")
                    .and_then(|(_, b)| b.split_whitespace().next()?.parse().ok())
                    .unwrap_or(0);
            } else if let Some(rest) = line.split_once("Got ").map(|(_, r)| r)
                && let Some((n, _)) = rest.split_once(" NAKs for")
            {
                r.nak_blocks += n.trim().parse::<u64>().unwrap_or(0);
            }
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_uftps_report() {
        let text = "\
Bytes: 67108864  Blocks: 51623  Sections: 5
Got 1098 NAKs for section 0 from client 10.77.0.4
2026/11/30 18:57:23.1: Got 2 NAKs for section 1 from client 10.77.0.3
Host: 10.77.0.2        Status: Completed   time:   0.845 seconds
Host: 10.77.0.3        Status: Completed   time:   0.956 seconds
Host: 10.77.0.4        Status: Aborted
Total elapsed time: 0.956 seconds
";
        let r = Report::parse(text);
        assert_eq!(r.blocks, 51_623);
        assert_eq!(r.nak_blocks, 1100);
        assert_eq!(
            r.completed,
            vec![Duration::from_millis(845), Duration::from_millis(956)]
        );
        assert_eq!(r.elapsed, Duration::from_millis(956));
    }
}

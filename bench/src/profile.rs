//! `--perf`: a CPU profile of the bench process and every thread and process it starts (the
//! in-process nodes, the `burghers` processes of `multicast`), taken with Linux `perf` while a
//! scenario runs and written as text next to its JSON: the CPU share by thread name, by binary
//! (the kernel's share is `[kernel.kallsyms]`), and the top symbols.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Samples per second and per CPU: enough for shares to a percent over a few seconds' run,
/// little enough not to be a load itself.
const FREQUENCY: &str = "499";

/// How long perf may take to attach before the run goes on without it.
const ATTACH_LIMIT: Duration = Duration::from_secs(10);

/// The report's sections over every thread: a heading and `perf report`'s sort keys.
const SECTIONS: [(&str, &str); 4] = [
    ("CPU share by thread name", "comm"),
    ("CPU share by binary ([kernel.kallsyms]: the kernel)", "dso"),
    ("CPU share by thread name and binary", "comm,dso"),
    ("Top symbols", "dso,sym"),
];

/// The same over the nodes' threads only (named `n<address>-<job>` by the engines), as shares
/// of their own time: where the engine spends its CPU, without the bench's sources, bare
/// forwarders and sinks. Summed here from per-thread reports, as `perf report --comms` does
/// not filter reliably on the threads of a process it attached to.
const NODE_SECTIONS: [(&str, &str); 2] = [
    ("Node threads only: CPU share by binary", "comm,dso"),
    ("Node threads only: top symbols", "comm,dso,sym"),
];

/// Below this share a line of a section is left out (percent).
const PERCENT_LIMIT: &str = "0.5";
const MIN_SHARE: f64 = 0.5;

/// A `perf record` attached to this process.
pub struct Profile {
    record: Child,
    stopped: bool,
    data: PathBuf,
    _dir: tempfile::TempDir,
}

impl Profile {
    /// Attaches `perf record` to this process (following every thread and child it starts
    /// from now on) and waits until it records.
    pub fn start() -> io::Result<Profile> {
        let dir = tempfile::tempdir()?;
        let data = dir.path().join("perf.data");
        let record = Command::new("perf")
            .args(["record", "--quiet", "-F", FREQUENCY, "-p"])
            .arg(std::process::id().to_string())
            .arg("-o")
            .arg(&data)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!(
                        "--perf: cannot run perf ({e}); install it: apt-get install linux-perf"
                    ),
                )
            })?;
        let mut profile = Profile {
            record,
            stopped: false,
            data,
            _dir: dir,
        };
        // perf writes its file's header once its events are open on every thread.
        let start = Instant::now();
        while fs::metadata(&profile.data).map_or(0, |m| m.len()) == 0 {
            if let Some(status) = profile.record.try_wait()? {
                return Err(io::Error::other(format!(
                    "--perf: perf record exited ({status}) before recording (perf_event_paranoid?)"
                )));
            }
            if start.elapsed() > ATTACH_LIMIT {
                profile.stop();
                return Err(io::Error::other(
                    "--perf: perf record did not start recording",
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(profile)
    }

    /// Stops recording and writes the report to `path`, headed by `command`.
    pub fn finish(mut self, command: &str, path: &Path) -> io::Result<()> {
        self.stop();
        let mut text = format!(
            "# CPU profile of `{command}`\n# perf record -F {FREQUENCY} -p <bench pid> \
             (every thread and child process), self time, lines under {PERCENT_LIMIT}% left out\n"
        );
        let by_thread = self.report("comm", PERCENT_LIMIT)?;
        if let Some(samples) = by_thread.lines().find(|l| l.starts_with("# Samples")) {
            text.push_str(samples);
            text.push('\n');
        }
        for (heading, keys) in SECTIONS {
            let report = self.report(keys, PERCENT_LIMIT)?;
            push_section(&mut text, heading, share_lines(&report));
        }
        for (heading, keys) in NODE_SECTIONS {
            let report = self.report(keys, "0")?;
            let lines: Vec<String> = node_shares(&report)
                .into_iter()
                .take_while(|(_, share)| *share >= MIN_SHARE)
                .map(|(what, share)| format!("{share:>9.2}%  {what}"))
                .collect();
            push_section(&mut text, heading, lines.iter().map(String::as_str));
        }
        fs::write(path, text)
    }

    /// Ends `perf record` as Ctrl-C does, so that it writes its data, and waits for it; once.
    pub fn stop(&mut self) {
        if std::mem::replace(&mut self.stopped, true) {
            return;
        }
        // SAFETY: kill signals the child this profile started and has not yet waited for.
        unsafe { libc::kill(self.record.id() as libc::pid_t, libc::SIGINT) };
        let _ = self.record.wait();
    }
}

impl Drop for Profile {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Profile {
    /// `perf report` of the recording sorted by `keys`, lines under `percent_limit` left out.
    fn report(&self, keys: &str, percent_limit: &str) -> io::Result<String> {
        let output = Command::new("perf")
            .args(["report", "--stdio", "--no-children", "--percent-limit"])
            .arg(percent_limit)
            .args(["--sort", keys, "-i"])
            .arg(&self.data)
            .stderr(Stdio::null())
            .output()?;
        if !output.status.success() {
            return Err(io::Error::other(format!(
                "perf report failed ({})",
                output.status
            )));
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }
}

/// The lines of a `perf report` that give shares (no comments, no blank lines).
fn share_lines(report: &str) -> impl Iterator<Item = &str> {
    report
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
}

fn push_section<'a>(text: &mut String, heading: &str, lines: impl Iterator<Item = &'a str>) {
    text.push_str(&format!("\n## {heading}\n\n"));
    for line in lines {
        text.push_str(line.trim_end());
        text.push('\n');
    }
}

/// From a report sorted by thread name first (`comm,…`), the nodes' threads only: the rest of
/// each line (binary, symbol) with its summed share of the nodes' time, largest first.
fn node_shares(report: &str) -> Vec<(String, f64)> {
    let mut shares: Vec<(String, f64)> = Vec::new();
    let mut total = 0.0;
    for line in share_lines(report) {
        let mut words = line.split_whitespace();
        let (Some(share), Some(comm)) = (words.next(), words.next()) else {
            continue;
        };
        let Some(share) = share.strip_suffix('%').and_then(|s| s.parse::<f64>().ok()) else {
            continue;
        };
        if !is_node_thread(comm) {
            continue;
        }
        total += share;
        let what = words.collect::<Vec<_>>().join(" ");
        match shares.iter_mut().find(|(w, _)| *w == what) {
            Some((_, sum)) => *sum += share,
            None => shares.push((what, share)),
        }
    }
    if total > 0.0 {
        for (_, share) in &mut shares {
            *share *= 100.0 / total;
        }
    }
    shares.sort_by(|a, b| b.1.total_cmp(&a.1));
    shares
}

/// Whether a thread name is a node's: `n`, the node's address, `-`, its job.
fn is_node_thread(name: &str) -> bool {
    name.strip_prefix('n')
        .and_then(|rest| rest.split_once('-'))
        .is_some_and(|(addr, _)| !addr.is_empty() && addr.bytes().all(|b| b.is_ascii_digit()))
}

/// Where the profile of a run goes: beside its JSON, `<stem>.perf.txt`.
pub fn path_beside(json: &Path) -> PathBuf {
    json.with_extension("perf.txt")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_shares_sum_the_node_threads_only_as_shares_of_their_time() {
        let report = "# comment\n\
             \x20   30.00%  n2-dnp-rx    [kernel.kallsyms]  [k] udp_recvmsg\n\
             \x20   50.00%  bench        [kernel.kallsyms]  [k] udp_recvmsg\n\
             \x20   10.00%  n3-dnp-rx    [kernel.kallsyms]  [k] udp_recvmsg\n\
             \x20   10.00%  n3-dnp-rx    bench              [.] <a as b>::parse\n";
        let shares = node_shares(report);
        assert_eq!(
            shares,
            vec![
                ("[kernel.kallsyms] [k] udp_recvmsg".to_string(), 80.0),
                ("bench [.] <a as b>::parse".to_string(), 20.0),
            ]
        );
    }

    #[test]
    fn node_threads_are_told_from_the_bench_s_own() {
        for name in ["n2-dnp-rx", "n1-rmtp-server-", "n17-drp"] {
            assert!(is_node_thread(name), "{name}");
        }
        for name in ["bench", "bench-fwd-1", "n-x", "nx-dnp", ":6871", "node-1"] {
            assert!(!is_node_thread(name), "{name}");
        }
    }
}

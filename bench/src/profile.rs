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

/// The report's sections: a heading and `perf report`'s sort keys.
const SECTIONS: [(&str, &str); 4] = [
    ("CPU share by thread name", "comm"),
    ("CPU share by binary ([kernel.kallsyms]: the kernel)", "dso"),
    ("CPU share by thread name and binary", "comm,dso"),
    ("Top symbols (thread name, binary, symbol)", "comm,dso,sym"),
];

/// Below this share a line of a section is left out (percent).
const PERCENT_LIMIT: &str = "0.5";

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
        for (heading, keys) in SECTIONS {
            let output = Command::new("perf")
                .args(["report", "--stdio", "--no-children", "--percent-limit"])
                .arg(PERCENT_LIMIT)
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
            text.push_str(&format!("\n## {heading}\n\n"));
            let report = String::from_utf8_lossy(&output.stdout);
            for line in report.lines().filter(|l| !l.trim().is_empty()) {
                if !line.starts_with('#') {
                    text.push_str(line.trim_end());
                    text.push('\n');
                }
            }
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

/// Where the profile of a run goes: beside its JSON, `<stem>.perf.txt`.
pub fn path_beside(json: &Path) -> PathBuf {
    json.with_extension("perf.txt")
}

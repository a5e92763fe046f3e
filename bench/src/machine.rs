//! What a result was measured on: CPU model, cores, kernel, load, date and the git commit.

use serde::Serialize;
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[derive(Clone, Debug, Serialize)]
pub struct Machine {
    pub cpu_model: String,
    pub cores: usize,
    /// `uname -srm`.
    pub kernel: String,
    /// The 1, 5 and 15 minute load averages when the run started: other work on the machine
    /// shows here.
    pub load_average: String,
    /// UTC, ISO 8601.
    pub date: String,
    pub git_commit: Option<String>,
    /// Whether the work tree had uncommitted changes.
    pub git_dirty: Option<bool>,
}

impl Machine {
    pub fn describe() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        Machine {
            cpu_model: cpu_model(&cpuinfo).unwrap_or_else(|| "unknown".into()),
            cores: cores(),
            kernel: kernel(),
            load_average: std::fs::read_to_string("/proc/loadavg")
                .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
                .unwrap_or_default(),
            date: utc_iso8601(SystemTime::now()),
            git_commit: git(&["rev-parse", "HEAD"]),
            git_dirty: git(&["status", "--porcelain", "--untracked-files=no"])
                .map(|s| !s.is_empty()),
        }
    }
}

/// The cores this process may run on.
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Writes `bytes` to a file in the temporary folder and deletes it, so that what is written
/// next goes to pages this kernel has just freed. On a VM that reports free memory to its host
/// (`virtio_balloon` free page reporting), a page the host took back costs a fault in the host
/// when it is next written, and whether a copy's pages were taken back depends on the hour,
/// not on the system: a 256 MiB receive took 0.7-0.9 s of system time on fresh pages against
/// 0.3 on freed ones (docs/BENCHMARKS.md). Run outside a measurement's timed and CPU-counted
/// stretch.
pub fn warm_free_pages(bytes: u64) -> std::io::Result<()> {
    const BLOCK: usize = 1 << 20;
    let mut file = tempfile::Builder::new().prefix("bench-warm-").tempfile()?;
    let block = vec![0x5Au8; BLOCK];
    let mut left = bytes;
    while left > 0 {
        let n = left.min(BLOCK as u64) as usize;
        std::io::Write::write_all(&mut file, &block[..n])?;
        left -= n as u64;
    }
    // Deleted unsynced: its pages are dropped, not written to the disk.
    file.close()
}

/// User + system time of every child process this process has waited for.
pub fn children_cpu() -> Duration {
    rusage(libc::RUSAGE_CHILDREN)
}

/// User + system time of this process (every thread).
pub fn own_cpu() -> Duration {
    rusage(libc::RUSAGE_SELF)
}

fn rusage(who: libc::c_int) -> Duration {
    // SAFETY: getrusage fills the plain-data struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(who, &raw mut usage) } != 0 {
        return Duration::ZERO;
    }
    let time = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    time(usage.ru_utime) + time(usage.ru_stime)
}

/// CPU time the hypervisor gave other guests while this one's CPUs wanted to run (`steal` of
/// `/proc/stat`, every CPU together), as a clock to read before and after a measurement: on a
/// shared VM a slow sample is often a stolen one. `None` where the kernel does not say.
pub fn stolen_cpu() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    // SAFETY: sysconf reads a constant of the system; no memory of ours is touched.
    let ticks_per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    stolen_in(&stat, u64::try_from(ticks_per_second).ok()?)
}

fn stolen_in(stat: &str, ticks_per_second: u64) -> Option<Duration> {
    // cpu  user nice system idle iowait irq softirq steal ...
    let ticks: u64 = stat
        .lines()
        .find(|l| l.starts_with("cpu "))?
        .split_whitespace()
        .nth(8)?
        .parse()
        .ok()?;
    (ticks_per_second > 0).then(|| Duration::from_secs_f64(ticks as f64 / ticks_per_second as f64))
}

fn cpu_model(cpuinfo: &str) -> Option<String> {
    cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
}

fn kernel() -> String {
    // SAFETY: utsname is plain data; uname fills it with NUL-terminated strings.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    if unsafe { libc::uname(&raw mut u) } != 0 {
        return "unknown".into();
    }
    let field = |f: &[libc::c_char]| {
        let bytes: Vec<u8> = f
            .iter()
            .take_while(|&&c| c != 0)
            .map(|&c| c as u8)
            .collect();
        String::from_utf8_lossy(&bytes).into_owned()
    };
    format!(
        "{} {} {}",
        field(&u.sysname),
        field(&u.release),
        field(&u.machine)
    )
}

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// `2026-11-30T17:45:00Z`.
pub fn utc_iso8601(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (y, m, d) = civil_from_days((secs / 86_400) as i64);
    let s = secs % 86_400;
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        s / 3600,
        s / 60 % 60,
        s % 60
    )
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (H. Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_in_utc() {
        assert_eq!(utc_iso8601(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        let t = UNIX_EPOCH + Duration::from_secs(1_709_210_096); // a leap day
        assert_eq!(utc_iso8601(t), "2024-02-29T12:34:56Z");
    }

    #[test]
    fn stolen_time_is_the_eighth_number_of_the_cpu_line() {
        let stat =
            "cpu  3527590 133 755576 1483832 550994 0 143745 73247 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\n";
        assert_eq!(stolen_in(stat, 100), Some(Duration::from_millis(732_470)));
        assert_eq!(stolen_in("cpu  1 2 3\n", 100), None);
        assert_eq!(stolen_in("intr 5\n", 100), None);
    }

    #[test]
    fn the_cpu_model_line() {
        let info = "processor\t: 0\nmodel name\t: Example CPU @ 2.0GHz\nflags\t: fpu\n";
        assert_eq!(cpu_model(info).as_deref(), Some("Example CPU @ 2.0GHz"));
    }
}

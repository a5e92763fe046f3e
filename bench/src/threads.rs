//! CPU time of this process's threads by name, from `/proc/self/task/*/schedstat` (time on a
//! CPU, in nanoseconds): what one stage of a chain (a node's threads, a bare forwarder, a sink)
//! cost per datagram, a figure that a machine shared with other work changes far less than the
//! rate it reaches.

use std::fs;

/// Nanoseconds on a CPU so far of the threads whose name starts with `prefix` (threads that
/// ended are no longer counted: read it before and after a run of threads that outlive it).
pub fn cpu_ns(prefix: &str) -> u64 {
    let Ok(tasks) = fs::read_dir("/proc/self/task") else {
        return 0;
    };
    tasks
        .flatten()
        .filter(|task| {
            fs::read_to_string(task.path().join("comm"))
                .is_ok_and(|name| name.trim_end().starts_with(prefix))
        })
        .filter_map(|task| {
            let stat = fs::read_to_string(task.path().join("schedstat")).ok()?;
            stat.split_whitespace().next()?.parse::<u64>().ok()
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A named thread that spins is counted under its name and not under another.
    #[test]
    fn a_named_threads_time_is_counted_under_its_name() {
        let spinner = std::thread::Builder::new()
            .name("cpu-ns-test".into())
            .spawn(|| {
                let start = std::time::Instant::now();
                let mut x = 0u64;
                while start.elapsed() < std::time::Duration::from_millis(20) {
                    x = std::hint::black_box(x.wrapping_add(1));
                }
                cpu_ns("cpu-ns-test")
            })
            .expect("spawn");
        let own = spinner.join().expect("join");
        assert!(own > 0, "the spinning thread's time is counted");
        assert_eq!(cpu_ns("no-such-thread-name"), 0);
    }
}

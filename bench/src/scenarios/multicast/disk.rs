//! The disk's limit for a transfer: one thread per receiver writes the file's size to a new file
//! in the folder the receivers' copies go to (the system's temporary folder), in the blocks a
//! receiver's `FileSink` writes, with the hints the sink gives after each (start the
//! write-back, drop an older range from the page cache), then syncs it: no network, no
//! protocol, no hash. Its goodput is the size over the slowest writer's time.
//! A transfer whose receivers write their copies cannot be faster than this, whatever the
//! network's limit.

use super::{Figures, Transfer};
use crate::machine::own_cpu;
use crate::runner::{Sample, Stop, System};
use control::settings::receiver::{DROP_BEHIND, STAGED_BYTES};
use dataplane::rmtp::hints;
use std::fs::File;
use std::io::{self, Write};
use std::path::Path;
use std::time::{Duration, Instant};

pub const NAME: &str = "disk-write";

pub struct Run<'a> {
    pub transfer: &'a Transfer,
    pub stop: Stop,
}

impl System for Run<'_> {
    fn name(&self) -> String {
        NAME.to_string()
    }

    fn measure(&mut self) -> io::Result<Sample> {
        let t = self.transfer;
        let dir = tempfile::Builder::new()
            .prefix("bench-multicast-disk-")
            .tempdir()?;
        t.warm_pages()?;
        let cpu_before = own_cpu();
        let me = &*self;
        let times = std::thread::scope(|s| {
            let writers: Vec<_> = (0..t.receivers)
                .map(|i| {
                    let path = dir.path().join(format!("copy{i}"));
                    s.spawn(move || me.write_copy(&path))
                })
                .collect();
            writers
                .into_iter()
                .map(|w| {
                    w.join()
                        .unwrap_or_else(|_| Err(io::Error::other("a writer panicked")))
                })
                .collect::<io::Result<Vec<Duration>>>()
        })?;
        let slowest = times.into_iter().max().unwrap_or_default();
        let figures = Figures {
            slowest_receiver: slowest,
            last_copy: slowest,
            cpu: own_cpu().saturating_sub(cpu_before),
            ..Figures::default()
        };
        let mut sample = figures.sample(t);
        sample.details.remove("copies_verified");
        Ok(sample)
    }
}

impl Run<'_> {
    /// Writes one copy's worth of bytes to a new file at `path` and syncs it; the time taken.
    fn write_copy(&self, path: &Path) -> io::Result<Duration> {
        let block = vec![0xA5u8; STAGED_BYTES];
        let start = Instant::now();
        let mut file = File::create(path)?;
        let mut written = 0u64;
        while written < self.transfer.size {
            if self.stop.requested() {
                return Err(io::Error::other("interrupted"));
            }
            let n = (self.transfer.size - written).min(block.len() as u64) as usize;
            file.write_all(&block[..n])?;
            hints::after_write(&file, written, n, DROP_BEHIND);
            written += n as u64;
        }
        file.sync_all()?;
        hints::after_sync(&file, DROP_BEHIND);
        Ok(start.elapsed())
    }
}

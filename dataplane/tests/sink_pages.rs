//! A file sink leaves the file it received out of the page cache (`receiver.drop_behind`): a
//! bulk transfer does not push the machine's cache out, and on a VM that hands free memory back
//! to its host the next blocks reuse the freed pages. Kept when asked. The file lies under
//! Cargo's target folder, on a disk (a tmpfs keeps its pages whatever is asked).

use control::settings::receiver::DROP_BEHIND;
use dataplane::rmtp::{FileSink, Finished, Sink};
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const SIZE: usize = 24 << 20;
const PIECE: usize = 994;

/// Pages of the file at `path` in the page cache, and its pages in all.
fn resident_pages(path: &Path) -> (usize, usize) {
    let file = File::open(path).expect("open the copy");
    let len = file.metadata().expect("its size").len() as usize;
    // SAFETY: plain queries; the mapping is read-only, never touched, and unmapped below.
    unsafe {
        let page = libc::sysconf(libc::_SC_PAGESIZE) as usize;
        let pages = len.div_ceil(page);
        let map = libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_SHARED,
            file.as_raw_fd(),
            0,
        );
        assert_ne!(map, libc::MAP_FAILED, "map the copy");
        let mut vec = vec![0u8; pages];
        assert_eq!(libc::mincore(map, len, vec.as_mut_ptr()), 0, "mincore");
        libc::munmap(map, len);
        (vec.iter().filter(|&&v| v & 1 == 1).count(), pages)
    }
}

fn receive(dir: &Path, drop_behind: u64, data: &[u8]) -> PathBuf {
    let mut sink = FileSink::with_drop_behind(dir, "f", drop_behind).expect("create the sink");
    for (k, piece) in data.chunks(PIECE).enumerate() {
        sink.write_at((k * PIECE) as u64, piece).expect("write");
    }
    let finished = sink.finish(blake3::hash(data).as_bytes()).expect("finish");
    if finished == Finished::Pending {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(outcome) = sink.poll_finished() {
                outcome.expect("verified, synced and renamed");
                break;
            }
            assert!(Instant::now() < deadline, "the sink never finished");
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    dir.join("f")
}

#[test]
fn a_received_file_leaves_the_page_cache_unless_kept() {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("sink-pages-{}", std::process::id()));
    let data: Vec<u8> = (0..SIZE).map(|i| (i * 31 + i / 4099) as u8).collect();
    let run = |name: &str, drop_behind: u64| {
        let dir = dir.join(name);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create the folder");
        let path = receive(&dir, drop_behind, &data);
        // Looked at before the copy is read back (which caches it). The last pages leave
        // after the sink told its outcome: given a moment.
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut pages = resident_pages(&path);
        while drop_behind > 0 && pages.0 > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
            pages = resident_pages(&path);
        }
        assert!(
            std::fs::read(&path).expect("the copy") == data,
            "the copy's bytes"
        );
        let _ = std::fs::remove_dir_all(&dir);
        pages
    };
    let (kept, pages) = run("kept", 0);
    let (dropped, _) = run("dropped", DROP_BEHIND);
    println!("{pages} pages: {kept} cached when kept, {dropped} when dropped");
    assert!(kept * 2 > pages, "kept: {kept} of {pages} pages cached");
    assert!(
        dropped * 50 < pages,
        "dropped: {dropped} of {pages} pages cached"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

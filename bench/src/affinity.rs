//! Which cores this process may run on, and pinning a thread to one of them
//! (`sched_getaffinity` / `sched_setaffinity`). Threads a pinned thread starts inherit its
//! core, which is how the `scale` scenario pins a worker's forwarder and sink with it.

use std::io;
use std::mem;

/// The cores the process may run on, in ascending order (at least one).
pub fn allowed_cores() -> io::Result<Vec<usize>> {
    // SAFETY: cpu_set_t is plain data; sched_getaffinity fills it for the calling thread.
    let mut set: libc::cpu_set_t = unsafe { mem::zeroed() };
    if unsafe { libc::sched_getaffinity(0, mem::size_of::<libc::cpu_set_t>(), &raw mut set) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: CPU_ISSET reads a bit of the set, for an index below its capacity.
    let cores: Vec<usize> = (0..libc::CPU_SETSIZE as usize)
        .filter(|&c| unsafe { libc::CPU_ISSET(c, &set) })
        .collect();
    if cores.is_empty() {
        return Err(io::Error::other("the affinity mask lists no core"));
    }
    Ok(cores)
}

/// Pins the calling thread (and the threads it starts from now on) to `core`.
pub fn pin_current_thread(core: usize) -> io::Result<()> {
    if core >= libc::CPU_SETSIZE as usize {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("core {core} is beyond the affinity mask's size"),
        ));
    }
    // SAFETY: as above; CPU_SET writes a bit below the set's capacity (checked).
    let mut set: libc::cpu_set_t = unsafe { mem::zeroed() };
    unsafe { libc::CPU_SET(core, &mut set) };
    if unsafe { libc::sched_setaffinity(0, mem::size_of::<libc::cpu_set_t>(), &raw const set) } != 0
    {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pinned_thread_and_its_children_stay_on_its_core() {
        let core = allowed_cores().expect("the affinity mask")[0];
        let seen = std::thread::spawn(move || {
            pin_current_thread(core).expect("pin");
            std::thread::spawn(allowed_cores).join().unwrap()
        })
        .join()
        .unwrap()
        .expect("the child's mask");
        assert_eq!(seen, vec![core]);
    }

    #[test]
    fn a_core_beyond_the_mask_is_refused() {
        assert!(pin_current_thread(usize::MAX).is_err());
    }
}

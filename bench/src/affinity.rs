//! Which cores this process may run on, and pinning a thread to one of them, with
//! `core_affinity` (the project's pinning crate, as the uring engine's workers use it). Threads
//! a pinned thread starts inherit its core, which is how the `scale` scenario pins a worker's
//! forwarder and sink with it.

use std::io;

/// The cores the calling thread may run on (the process's affinity mask, unless it was pinned),
/// in ascending order (at least one).
pub fn allowed_cores() -> io::Result<Vec<usize>> {
    let cores: Vec<usize> = core_affinity::get_core_ids()
        .ok_or_else(|| io::Error::other("cannot read the affinity mask"))?
        .into_iter()
        .map(|c| c.id)
        .collect();
    if cores.is_empty() {
        return Err(io::Error::other("the affinity mask lists no core"));
    }
    Ok(cores)
}

/// Pins the calling thread (and the threads it starts from now on) to `core`.
pub fn pin_current_thread(core: usize) -> io::Result<()> {
    // core_affinity sets the core's bit unchecked, which panics beyond the mask's size.
    if core >= libc::CPU_SETSIZE as usize {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("core {core} is beyond the affinity mask's size"),
        ));
    }
    if !core_affinity::set_for_current(core_affinity::CoreId { id: core }) {
        return Err(io::Error::other(format!(
            "the kernel refused to pin this thread to core {core} (not in the allowed set?)"
        )));
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

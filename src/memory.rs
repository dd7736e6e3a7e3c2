//! Process hardening for a key server: no core dumps, memory locked where permitted,
//! enough file descriptors for many clients.

/// Applies what the platform permits and says clearly what it could not.
pub fn harden() {
    disable_core_dumps();
    raise_open_file_limit();
    lock_memory();
}

fn disable_core_dumps() {
    let zero = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain syscalls with valid arguments.
    unsafe {
        libc::setrlimit(libc::RLIMIT_CORE, &zero);
        // Not dumpable: no core file, and no ptrace by other processes of the same user.
        libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0);
    }
}

fn raise_open_file_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid out-pointer.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0
        && limit.rlim_cur < limit.rlim_max
    {
        limit.rlim_cur = limit.rlim_max;
        // SAFETY: `limit` is valid.
        unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) };
    }
}

/// Locks memory so keys are never swapped out. Pages are locked as they are touched
/// (MCL_ONFAULT), so locking costs no extra memory. Locking is skipped when the limit
/// is too small to run under: with MCL_FUTURE an allocation past the limit would fail.
fn lock_memory() {
    const ENOUGH: libc::rlim_t = 1 << 30;
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid out-pointer.
    unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut limit) };
    if limit.rlim_cur != libc::RLIM_INFINITY && limit.rlim_cur < ENOUGH {
        log::warn!(
            "memory is not locked: the memlock limit is {} KiB; to keep keys out of swap run kes with LimitMEMLOCK=infinity (systemd) or 'ulimit -l unlimited'",
            limit.rlim_cur / 1024
        );
        return;
    }
    // SAFETY: plain syscall.
    let rc = unsafe { libc::mlockall(libc::MCL_CURRENT | libc::MCL_FUTURE | libc::MCL_ONFAULT) };
    if rc == 0 {
        log::info!("memory is locked: keys are never written to swap");
    } else {
        log::warn!(
            "memory is not locked: mlockall failed: {}",
            std::io::Error::last_os_error()
        );
    }
}

//! Figures about processes: this one (`getrusage`) and others (`/proc`), for the JSON line,
//! the server's statistics, the bench and the tests.

/// A kB figure from `/proc/PID/FILE` (PID "self" for this process): the line starting with
/// `key`, e.g. `VmRSS:` in `status` (resident now) or `Pss:` in `smaps_rollup`.
pub fn proc_kb(pid: &str, file: &str, key: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/{file}")).ok()?;
    let line = s.lines().find(|l| l.starts_with(key))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// CPU seconds (user + system) a process has used so far, from `/proc/PID/stat`.
pub fn proc_cpu_s(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // pid (comm) state ppid ... utime stime: fields 14 and 15, the 12th and 13th after ')'.
    let mut rest = stat.rsplit(')').next()?.split_whitespace().skip(11);
    let ticks: f64 = rest.next()?.parse::<f64>().ok()? + rest.next()?.parse::<f64>().ok()?;
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).ok().flatten().unwrap_or(100).max(1) as f64;
    Some(ticks / hz)
}

/// The processes whose parent is `pid`.
pub fn children_of(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(p) = e.file_name().to_string_lossy().parse::<u32>() else { continue };
        if let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) {
            // pid (comm) state ppid ...: the comm may hold spaces, so split after ')'.
            let ppid = stat.rsplit(')').next().and_then(|r| r.split_whitespace().nth(1)).and_then(|s| s.parse::<u32>().ok());
            if ppid == Some(pid) {
                out.push(p);
            }
        }
    }
    out
}

/// CPU seconds (user + system) and peak RSS in KiB of this process.
pub fn rusage() -> (f64, u64) {
    match nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF) {
        Ok(u) => {
            let tv = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
            (tv(u.user_time()) + tv(u.system_time()), u.max_rss() as u64)
        }
        Err(_) => (0.0, 0),
    }
}

//! The measured server's resource use, read from Linux's /proc: CPU time (in clock ticks, and to
//! the nanosecond where the kernel keeps schedstat) and resident memory.
//!
//! Parsing is separate from reading so it can be tested on sample text. /proc/PID/stat puts the
//! command name in parentheses and the name may itself contain spaces and parentheses, so fields
//! are counted from the *last* `)`.

use std::collections::HashMap;
use std::fs;
use std::io;

use nix::unistd::{SysconfVar, sysconf};

/// utime + stime of a process, in clock ticks, from the text of /proc/PID/stat.
pub fn parse_stat_ticks(stat: &str) -> Option<u64> {
    let after_comm = &stat[stat.rfind(')')? + 1..];
    // Fields after the name start at field 3 (state); utime and stime are fields 14 and 15.
    let mut fields = after_comm.split_ascii_whitespace().skip(14 - 3);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// Nanoseconds on CPU, the first field of /proc/PID/task/TID/schedstat.
pub fn parse_schedstat_ns(schedstat: &str) -> Option<u64> {
    schedstat.split_ascii_whitespace().next()?.parse().ok()
}

/// VmRSS in bytes, from the text of /proc/PID/status (which gives it in kB, meaning KiB).
pub fn parse_status_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let mut words = line["VmRSS:".len()..].split_ascii_whitespace();
    let kib: u64 = words.next()?.parse().ok()?;
    (words.next() == Some("kB")).then_some(kib * 1024)
}

fn invalid(what: &str, pid: u32) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("unexpected format of /proc/{pid}/{what}"),
    )
}

/// CPU seconds (user + system) process `pid` has used so far.
pub fn cpu_seconds(pid: u32) -> io::Result<f64> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let ticks = parse_stat_ticks(&text).ok_or_else(|| invalid("stat", pid))?;
    let per_sec = sysconf(SysconfVar::CLK_TCK)
        .map_err(io::Error::from)?
        .filter(|&t| t > 0)
        .ok_or_else(|| io::Error::other("sysconf(CLK_TCK) gave no value"))?;
    Ok(ticks as f64 / per_sec as f64)
}

/// Nanoseconds on CPU so far by thread id.
pub type ThreadCpu = HashMap<u32, u64>;

/// How long each of process `pid`'s live threads has been on a CPU, to the nanosecond, from
/// /proc/PID/task/*/schedstat (where /proc/PID/stat counts clock ticks, usually 10 ms). A thread
/// running at that moment is counted up to its last tick or scheduling event: the readings are
/// taken while the server is idle. None if the kernel keeps no schedstat.
pub fn thread_cpu_ns(pid: u32) -> io::Result<Option<ThreadCpu>> {
    let mut threads = ThreadCpu::new();
    for task in fs::read_dir(format!("/proc/{pid}/task"))? {
        let task = task?;
        let Some(tid) = task.file_name().to_str().and_then(|t| t.parse().ok()) else {
            continue;
        };
        let path = task.path().join("schedstat");
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                // Either no schedstat at all, or the thread exited since the listing.
                if task.path().exists() {
                    return Ok(None);
                }
                continue;
            }
            Err(e) => return Err(e),
        };
        let ns = parse_schedstat_ns(&text).ok_or_else(|| invalid("task/*/schedstat", pid))?;
        threads.insert(tid, ns);
    }
    Ok(Some(threads))
}

/// CPU seconds used between two [`thread_cpu_ns`] readings: each thread's growth, counting
/// threads that started in between from zero. A thread that exited in between is missing from
/// `after` and its share is lost, but the figure never goes down because of it.
pub fn cpu_seconds_between(before: &ThreadCpu, after: &ThreadCpu) -> f64 {
    let ns: u64 = after
        .iter()
        .map(|(tid, &ns)| ns.saturating_sub(before.get(tid).copied().unwrap_or(0)))
        .sum();
    ns as f64 / 1e9
}

/// Resident set size of process `pid`, in bytes.
pub fn rss_bytes(pid: u32) -> io::Result<u64> {
    let text = fs::read_to_string(format!("/proc/{pid}/status"))?;
    parse_status_rss(&text).ok_or_else(|| invalid("status", pid))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_from_the_last_parenthesis() {
        let plain = "4242 (groupchatd) S 1 4242 4242 0 -1 4194560 1500 0 0 0 250 75 0 0 20 0 3 0";
        assert_eq!(parse_stat_ticks(plain), Some(325));
        let tricky =
            "77 (my (odd) name ) x) R 1 77 77 0 -1 4194560 9 0 0 0 12 30 0 0 20 0 1 0 555 1000";
        assert_eq!(parse_stat_ticks(tricky), Some(42));
    }

    #[test]
    fn truncated_or_odd_stat_is_rejected() {
        assert_eq!(parse_stat_ticks(""), None);
        assert_eq!(parse_stat_ticks("1 (x) S 1 2 3"), None);
        assert_eq!(
            parse_stat_ticks("1 x S 1 2 3 4 5 6 7 8 9 10 11 12 13"),
            None
        );
        assert_eq!(
            parse_stat_ticks("1 (x) S 1 1 1 0 -1 0 0 0 0 0 -5 3 0"),
            None
        );
    }

    #[test]
    fn schedstat_gives_nanoseconds_on_cpu() {
        assert_eq!(
            parse_schedstat_ns("1234567890 55555 42\n"),
            Some(1_234_567_890)
        );
        assert_eq!(parse_schedstat_ns(""), None);
        assert_eq!(parse_schedstat_ns("x 1 2"), None);
    }

    #[test]
    fn rss_is_read_from_the_vmrss_line() {
        let status = "Name:\tgroupchatd\nVmPeak:\t  99999 kB\nVmRSS:\t    5120 kB\nThreads:\t3\n";
        assert_eq!(parse_status_rss(status), Some(5120 * 1024));
        // Kernel threads have no VmRSS line.
        assert_eq!(parse_status_rss("Name:\tkthreadd\nState:\tS\n"), None);
        assert_eq!(parse_status_rss("VmRSS:\t12 MB\n"), None);
    }

    #[test]
    fn our_own_process_can_be_measured() {
        let me = std::process::id();
        assert!(rss_bytes(me).unwrap() > 0);
        assert!(cpu_seconds(me).unwrap() >= 0.0);
        // This test thread runs between the readings, so the figure grows wherever schedstat
        // exists. A running thread's count is brought up to date when it is scheduled (or at a
        // tick), so it spins a little and yields before each reading; bounded to about a second.
        if let Some(before) = thread_cpu_ns(me).unwrap() {
            let grew = (0..1000).any(|_| {
                let spin = std::time::Instant::now();
                while spin.elapsed() < std::time::Duration::from_millis(1) {
                    std::hint::spin_loop();
                }
                std::thread::yield_now();
                let after = thread_cpu_ns(me).unwrap().unwrap();
                cpu_seconds_between(&before, &after) > 0.0
            });
            assert!(grew, "schedstat never counted this thread's CPU time");
        }
    }

    #[test]
    fn cpu_between_counts_growth_new_threads_and_never_exited_ones() {
        let before = ThreadCpu::from([(1, 1_000), (2, 5_000), (3, 9_000)]);
        // Thread 2 exited, thread 4 started, 1 and 3 ran on.
        let after = ThreadCpu::from([(1, 1_500), (3, 9_250), (4, 250)]);
        assert_eq!(cpu_seconds_between(&before, &after), 1_000e-9);
        assert_eq!(cpu_seconds_between(&after, &after), 0.0);
    }
}

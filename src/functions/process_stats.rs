//! The process metrics of `/metrics` (CPU time, memory, file descriptors, start time), read
//! from `/proc/self` when the page is rendered and written in the Prometheus text format under
//! the names every Prometheus client library uses. They are rendered here rather than through
//! the `metrics` recorder because `process_cpu_seconds_total` is a fractional counter, which the
//! recorder cannot hold. Elsewhere than Linux (no `/proc`) the section is empty.

use std::fmt::Write;
use std::path::Path;

/// What could be read; a missing value is left out of the page.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ProcessStats {
    pub cpu_seconds: Option<f64>,
    pub resident_bytes: Option<u64>,
    pub virtual_bytes: Option<u64>,
    pub open_fds: Option<u64>,
    pub max_fds: Option<u64>,
    pub start_time_seconds: Option<f64>,
}

/// `AT_CLKTCK` in the auxiliary vector: the unit of the times in `/proc/<pid>/stat`.
const AT_CLKTCK: u64 = 17;
/// Linux's `USER_HZ` on every common architecture, used if the auxiliary vector is unreadable.
const DEFAULT_CLOCK_TICKS: u64 = 100;

impl ProcessStats {
    /// Reads `/proc/self` (blocking, but only a few small in-memory files).
    pub fn read() -> ProcessStats {
        let proc = Path::new("/proc");
        let me = proc.join("self");
        let read = |name: &str| std::fs::read_to_string(me.join(name)).ok();
        let ticks = std::fs::read(me.join("auxv"))
            .ok()
            .and_then(|auxv| clock_ticks(&auxv))
            .unwrap_or(DEFAULT_CLOCK_TICKS) as f64;
        let stat = read("stat").and_then(|s| parse_stat(&s));
        let status = read("status");
        let boot_time = std::fs::read_to_string(proc.join("stat"))
            .ok()
            .and_then(|s| parse_boot_time(&s));
        ProcessStats {
            cpu_seconds: stat.map(|s| (s.utime + s.stime) as f64 / ticks),
            resident_bytes: status
                .as_deref()
                .and_then(|s| status_kib(s, "VmRSS:"))
                .map(|k| k * 1024),
            virtual_bytes: status
                .as_deref()
                .and_then(|s| status_kib(s, "VmSize:"))
                .map(|k| k * 1024),
            open_fds: std::fs::read_dir(me.join("fd")).ok().map(|d| d.count() as u64),
            max_fds: read("limits").and_then(|s| max_open_files_of(&s)),
            start_time_seconds: match (boot_time, stat) {
                (Some(boot), Some(s)) => Some(boot as f64 + s.start_ticks as f64 / ticks),
                _ => None,
            },
        }
    }

    /// The Prometheus text of the values that were read, `# HELP` and `# TYPE` included.
    pub fn render(&self) -> String {
        let text = |v: Option<u64>| v.map(|v| v.to_string());
        let rows = [
            (
                "process_cpu_seconds_total",
                "counter",
                "Total user and system CPU time spent in seconds.",
                self.cpu_seconds.map(|v| v.to_string()),
            ),
            (
                "process_resident_memory_bytes",
                "gauge",
                "Resident memory size in bytes.",
                text(self.resident_bytes),
            ),
            (
                "process_virtual_memory_bytes",
                "gauge",
                "Virtual memory size in bytes.",
                text(self.virtual_bytes),
            ),
            (
                "process_open_fds",
                "gauge",
                "Number of open file descriptors.",
                text(self.open_fds),
            ),
            (
                "process_max_fds",
                "gauge",
                "Maximum number of open file descriptors.",
                text(self.max_fds),
            ),
            (
                "process_start_time_seconds",
                "gauge",
                "Start time of the process since unix epoch in seconds.",
                self.start_time_seconds.map(|v| v.to_string()),
            ),
        ];
        let mut out = String::new();
        for (name, kind, help, value) in rows {
            if let Some(v) = value {
                let _ = write!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}\n\n");
            }
        }
        out
    }
}

/// The fields of `/proc/<pid>/stat` used here, in clock ticks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stat {
    utime: u64,
    stime: u64,
    start_ticks: u64,
}

/// Parses `/proc/<pid>/stat`. The command name (field 2) is in parentheses and may itself hold
/// spaces and parentheses, so the fields are counted from the last `)`.
fn parse_stat(line: &str) -> Option<Stat> {
    let rest = &line[line.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state): utime is field 14, stime 15, starttime 22.
    let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    Some(Stat {
        utime: field(14)?,
        stime: field(15)?,
        start_ticks: field(22)?,
    })
}

/// `AT_CLKTCK` from the auxiliary vector: native-endian (key, value) pairs of machine words.
fn clock_ticks(auxv: &[u8]) -> Option<u64> {
    const WORD: usize = std::mem::size_of::<usize>();
    let word = |b: &[u8]| -> Option<u64> {
        let bytes: [u8; WORD] = b.try_into().ok()?;
        u64::try_from(usize::from_ne_bytes(bytes)).ok()
    };
    auxv.chunks_exact(2 * WORD)
        .filter_map(|pair| Some((word(&pair[..WORD])?, word(&pair[WORD..])?)))
        .find(|(key, _)| *key == AT_CLKTCK)
        .map(|(_, ticks)| ticks)
        .filter(|ticks| *ticks > 0)
}

/// A `kB` line of `/proc/<pid>/status` (`VmRSS:     1234 kB`).
fn status_kib(status: &str, key: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with(key))?;
    line[key.len()..].split_whitespace().next()?.parse().ok()
}

/// The soft limit of `Max open files` in `/proc/<pid>/limits` (`unlimited`: none).
fn max_open_files_of(limits: &str) -> Option<u64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..].split_whitespace().next()?.parse().ok()
}

/// This process's soft limit of open files, if it has one.
pub fn max_open_files() -> Option<u64> {
    max_open_files_of(&std::fs::read_to_string("/proc/self/limits").ok()?)
}

/// `btime` of `/proc/stat`: the boot time in seconds since the epoch.
fn parse_boot_time(stat: &str) -> Option<u64> {
    let line = stat.lines().find(|l| l.starts_with("btime "))?;
    line["btime ".len()..].trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_command_name() {
        let line = "4242 (tokio (worker) 1) S 1 4242 4242 0 -1 4194560 2190 0 0 0 \
                    150 37 0 0 20 0 9 0 81234 123456789 2048 18446744073709551615 1 1 0 0 0";
        assert_eq!(
            parse_stat(line),
            Some(Stat {
                utime: 150,
                stime: 37,
                start_ticks: 81234
            })
        );
        assert_eq!(parse_stat("4242 (truncated) S 1 2"), None);
        assert_eq!(parse_stat("no parenthesis"), None);
    }

    #[test]
    fn clock_ticks_come_from_the_auxiliary_vector() {
        let mut auxv = Vec::new();
        for (k, v) in [(6usize, 4096usize), (17, 250), (0, 0)] {
            auxv.extend_from_slice(&k.to_ne_bytes());
            auxv.extend_from_slice(&v.to_ne_bytes());
        }
        assert_eq!(clock_ticks(&auxv), Some(250));
        assert_eq!(clock_ticks(&auxv[..16]), None);
        assert_eq!(clock_ticks(&[1, 2, 3]), None);
    }

    #[test]
    fn status_limits_and_boot_time() {
        let status = "Name:\talterego\nVmSize:\t  812345 kB\nVmRSS:\t   20480 kB\n";
        assert_eq!(status_kib(status, "VmRSS:"), Some(20480));
        assert_eq!(status_kib(status, "VmSize:"), Some(812_345));
        assert_eq!(status_kib(status, "VmSwap:"), None);
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max open files            1024                 524288               files\n";
        assert_eq!(max_open_files_of(limits), Some(1024));
        assert_eq!(max_open_files_of("Max open files unlimited unlimited files"), None);
        assert_eq!(parse_boot_time("cpu  1 2 3\nbtime 1733480000\n"), Some(1_733_480_000));
    }

    #[test]
    fn render_writes_help_type_and_value_for_what_was_read() {
        let stats = ProcessStats {
            cpu_seconds: Some(1.5),
            open_fds: Some(12),
            ..ProcessStats::default()
        };
        let text = stats.render();
        assert!(text.contains(
            "# HELP process_cpu_seconds_total Total user and system CPU time spent in seconds.\n\
             # TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total 1.5\n"
        ));
        assert!(text.contains("# TYPE process_open_fds gauge\nprocess_open_fds 12\n"));
        assert!(!text.contains("process_resident_memory_bytes"));
        assert_eq!(ProcessStats::default().render(), "");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn this_process_can_be_read() {
        let stats = ProcessStats::read();
        assert!(stats.cpu_seconds.is_some_and(|s| s >= 0.0));
        assert!(stats.resident_bytes.is_some_and(|b| b > 0));
        assert!(stats.open_fds.is_some_and(|n| n >= 3));
        assert!(stats.start_time_seconds.is_some_and(|t| t > 1.0e9));
    }
}

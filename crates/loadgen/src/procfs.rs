//! Memory and CPU time of a process, read from Linux's `/proc`.

use anyhow::{Context as _, anyhow};

/// One reading of a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessSample {
    /// Resident set size now (`VmRSS`), KiB.
    pub rss_kib: u64,
    /// Peak resident set size since the process started (`VmHWM`), KiB.
    pub hwm_kib: u64,
    /// User plus system CPU time (`utime + stime`), clock ticks.
    pub cpu_ticks: u64,
}

/// Reads samples of one process.
#[derive(Debug, Clone)]
pub struct ProcessProbe {
    /// `/proc/<pid>` or `/proc/self`.
    dir: String,
    ticks_per_second: u64,
}

impl ProcessProbe {
    /// A probe of process `pid`; fails if it cannot be read now.
    pub fn new(pid: u32) -> anyhow::Result<Self> {
        let probe = Self::at(format!("/proc/{pid}"));
        probe
            .sample()
            .with_context(|| format!("--bus-pid {pid}: cannot read the process"))?;
        Ok(probe)
    }

    /// A probe of this process.
    pub fn own() -> Self {
        Self::at("/proc/self".into())
    }

    fn at(dir: String) -> Self {
        // SAFETY: sysconf only reads a constant of the C library.
        let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        Self {
            dir,
            ticks_per_second: u64::try_from(ticks).ok().filter(|&t| t > 0).unwrap_or(100),
        }
    }

    /// Reads the process's memory and CPU time.
    pub fn sample(&self) -> anyhow::Result<ProcessSample> {
        let status = std::fs::read_to_string(format!("{}/status", self.dir))?;
        let stat = std::fs::read_to_string(format!("{}/stat", self.dir))?;
        let (rss_kib, hwm_kib) = parse_status(&status)
            .ok_or_else(|| anyhow!("{}/status has no VmRSS/VmHWM", self.dir))?;
        let cpu_ticks = parse_stat_cpu_ticks(&stat)
            .ok_or_else(|| anyhow!("{}/stat: unexpected format", self.dir))?;
        Ok(ProcessSample {
            rss_kib,
            hwm_kib,
            cpu_ticks,
        })
    }

    /// Clock ticks as seconds.
    pub fn seconds(&self, ticks: u64) -> f64 {
        ticks as f64 / self.ticks_per_second as f64
    }
}

/// `VmRSS` and `VmHWM` from the text of `/proc/<pid>/status`, in KiB.
pub fn parse_status(text: &str) -> Option<(u64, u64)> {
    let field = |name: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
            .and_then(|rest| rest.trim().strip_suffix("kB"))
            .and_then(|kib| kib.trim().parse().ok())
    };
    Some((field("VmRSS")?, field("VmHWM")?))
}

/// `utime + stime` from the text of `/proc/<pid>/stat`. The command name (field 2) may contain
/// spaces and parentheses, so fields are counted from the last `)`.
pub fn parse_stat_cpu_ticks(text: &str) -> Option<u64> {
    let after_name = &text[text.rfind(')')? + 1..];
    let mut fields = after_name.split_ascii_whitespace();
    // After the name: state (field 3) … utime is field 14, stime field 15.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_rss_and_peak_from_status() {
        let status = "Name:\tthreatbus\nVmPeak:\t  900000 kB\nVmHWM:\t   30720 kB\nVmRSS:\t   20480 kB\nThreads:\t9\n";
        assert_eq!(parse_status(status), Some((20480, 30720)));
        assert_eq!(parse_status("VmRSS:\t 1 kB\n"), None);
        // A kernel thread has no memory lines.
        assert_eq!(parse_status("Name:\tkthreadd\n"), None);
    }

    #[test]
    fn reads_cpu_ticks_after_a_name_with_spaces_and_parens() {
        let stat = "4242 (tokio (x) 1) S 1 4242 4242 0 -1 4194560 5000 0 0 0 150 25 0 0 20 0 9 0 1000 123456 789";
        assert_eq!(parse_stat_cpu_ticks(stat), Some(175));
        assert_eq!(parse_stat_cpu_ticks("4242 (x) S 1 2"), None);
        assert_eq!(parse_stat_cpu_ticks("no parens"), None);
    }

    #[test]
    fn samples_this_process() {
        let probe = ProcessProbe::own();
        let sample = probe.sample().unwrap();
        assert!(sample.rss_kib > 0 && sample.hwm_kib >= sample.rss_kib);
        assert!(probe.seconds(probe.ticks_per_second) == 1.0);
        assert!(ProcessProbe::new(u32::MAX).is_err());
    }
}

//! Watching the bus process during a run: its memory and CPU time, sampled by the main thread
//! while it waits, and the figures the report shows from them.

use std::time::Instant;

use anyhow::bail;

use super::Settings;
use crate::procfs::{ProcessProbe, ProcessSample};
use crate::report::BusFigures;

/// The bus samples of a run.
#[derive(Debug, Clone, Copy)]
pub(super) struct BusSamples {
    peak_rss_kib: u64,
    last: ProcessSample,
    /// At the start of measuring.
    measure_start: (Instant, ProcessSample),
    /// At the last tick that saw progress.
    last_progress: (Instant, ProcessSample),
}

impl BusSamples {
    pub(super) fn figures(
        &self,
        probe: &ProcessProbe,
        pid: u32,
        start: ProcessSample,
    ) -> BusFigures {
        let mib = |kib: u64| kib as f64 / 1024.0;
        let cpu_s = probe.seconds(
            self.last_progress
                .1
                .cpu_ticks
                .saturating_sub(self.measure_start.1.cpu_ticks),
        );
        let window_s = (self.last_progress.0 - self.measure_start.0).as_secs_f64();
        BusFigures {
            pid,
            rss_start_mib: mib(start.rss_kib),
            rss_peak_mib: mib(self.peak_rss_kib.max(start.rss_kib)),
            hwm_mib: mib(self.last.hwm_kib),
            cpu_s,
            window_s,
            cpu_percent: if window_s > 0.0 {
                cpu_s / window_s * 100.0
            } else {
                0.0
            },
        }
    }
}

/// Samples the bus while the main thread waits.
pub(super) struct BusWatch<'a> {
    probe: Option<&'a ProcessProbe>,
    pub(super) samples: Option<BusSamples>,
    /// Set when the bus process could no longer be read: it has exited.
    gone: bool,
}

impl<'a> BusWatch<'a> {
    /// Watches the bus `probe` reads, if any; nothing sampled yet.
    pub(super) fn new(probe: Option<&'a ProcessProbe>) -> Self {
        Self {
            probe,
            samples: None,
            gone: false,
        }
    }

    /// Samples now, unless there is no bus to watch.
    pub(super) fn sample(&mut self, progressed: bool, measure_started: bool) {
        let Some(probe) = self.probe else { return };
        let Ok(sample) = probe.sample() else {
            self.gone = true;
            return;
        };
        let now = Instant::now();
        let samples = self.samples.get_or_insert(BusSamples {
            peak_rss_kib: sample.rss_kib,
            last: sample,
            measure_start: (now, sample),
            last_progress: (now, sample),
        });
        samples.peak_rss_kib = samples.peak_rss_kib.max(sample.rss_kib);
        samples.last = sample;
        if !measure_started {
            samples.measure_start = (now, sample);
            samples.last_progress = (now, sample);
        } else if progressed {
            samples.last_progress = (now, sample);
        }
    }
}

impl BusWatch<'_> {
    /// Fails once the watched bus has exited.
    pub(super) fn check_alive(&self, settings: &Settings) -> anyhow::Result<()> {
        if self.gone {
            bail!(
                "the bus process {} exited during the run",
                settings.bus_pid.unwrap_or(0)
            );
        }
        Ok(())
    }
}

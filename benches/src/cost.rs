//! CPU cost per call: how much processor time (user + system, all threads) and how many thread
//! switches the client process and the server process spend on each call.
//!
//! Throughput on a two-core machine shared by client and server is CPU time per call in disguise,
//! and CPU time is far less sensitive to the machine's other load than a rate or a latency is: it
//! is what to compare when tuning the per-call path.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;

use crate::contenders::Client;

/// Clock ticks per second of `/proc/<pid>/stat`'s CPU times (`USER_HZ`, 100 on Linux).
const TICKS_PER_SECOND: f64 = 100.0;

/// A process's CPU time and thread switches so far.
#[derive(Debug, Clone, Copy, Default)]
pub struct Usage {
    /// User plus system CPU time of every thread, in seconds.
    pub cpu_seconds: f64,
    /// Voluntary plus involuntary context switches of the threads alive now.
    pub switches: u64,
}

impl std::ops::Sub for Usage {
    type Output = Usage;
    fn sub(self, earlier: Usage) -> Usage {
        Usage {
            cpu_seconds: self.cpu_seconds - earlier.cpu_seconds,
            switches: self.switches.saturating_sub(earlier.switches),
        }
    }
}

/// Reads a process's usage from `/proc` (Linux only; `None` elsewhere or if it has exited).
pub fn usage(pid: u32) -> Option<Usage> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields are counted after its closing one.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, the 12th and 13th after the name.
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    let mut switches = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).ok()?.flatten() {
        let Ok(status) = std::fs::read_to_string(task.path().join("status")) else { continue };
        for line in status.lines() {
            if let Some(n) =
                line.strip_prefix("voluntary_ctxt_switches:").or(line.strip_prefix("nonvoluntary_ctxt_switches:"))
            {
                switches += n.trim().parse::<u64>().unwrap_or(0);
            }
        }
    }
    Some(Usage { cpu_seconds: ticks as f64 / TICKS_PER_SECOND, switches })
}

/// What `duet-bench cost` measures the cost of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Workload {
    /// Unary calls of `size` bytes each way; costs are per call.
    Unary,
    /// 64 MiB server-streamed in `size`-byte messages per call; costs are per MiB.
    Download,
    /// 64 MiB client-streamed in `size`-byte messages per call; costs are per MiB.
    Upload,
}

/// Bytes one streaming call moves.
pub const STREAM_TOTAL: u64 = 64 << 20;

impl Workload {
    /// The payload size when none is given: the main table's.
    pub fn default_size(self) -> usize {
        match self {
            Workload::Unary => 64,
            Workload::Download | Workload::Upload => 64 << 10,
        }
    }

    /// Calls per measurement when none is given: long enough for `/proc`'s 10 ms CPU ticks.
    pub fn default_calls(self) -> u64 {
        match self {
            Workload::Unary => 20_000,
            Workload::Download | Workload::Upload => 8,
        }
    }

    /// What one unit of cost is.
    pub fn unit(self) -> &'static str {
        match self {
            Workload::Unary => "call",
            Workload::Download | Workload::Upload => "MiB",
        }
    }

    /// Runs `calls` calls from `callers` concurrent callers; returns how many units they were.
    pub async fn run(
        self,
        client: &Client,
        size: usize,
        callers: usize,
        calls: u64,
    ) -> Result<f64, crate::contenders::Error> {
        let left = Arc::new(AtomicU64::new(calls));
        let data = Bytes::from(vec![1u8; size]);
        let tasks: Vec<_> = (0..callers)
            .map(|_| {
                let (client, data, left) = (client.clone(), data.clone(), left.clone());
                tokio::spawn(async move {
                    while left.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1)).is_ok() {
                        match self {
                            Workload::Unary => client.unary(data.clone()).await?,
                            Workload::Download => {
                                expect(STREAM_TOTAL, client.download(STREAM_TOTAL, size as u32).await?)?
                            }
                            Workload::Upload => expect(STREAM_TOTAL, client.upload(STREAM_TOTAL, size as u32).await?)?,
                        }
                    }
                    Ok::<_, crate::contenders::Error>(())
                })
            })
            .collect();
        for t in tasks {
            t.await.map_err(|e| e.to_string())??;
        }
        Ok(match self {
            Workload::Unary => calls as f64,
            Workload::Download | Workload::Upload => (calls * STREAM_TOTAL) as f64 / f64::from(1 << 20),
        })
    }
}

fn expect(want: u64, got: u64) -> Result<(), crate::contenders::Error> {
    if got == want { Ok(()) } else { Err(format!("a stream of {want} bytes moved {got}")) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_usage_is_readable_and_grows_with_work() {
        let before = usage(std::process::id()).expect("Linux /proc");
        let mut x = 0u64;
        let start = std::time::Instant::now();
        while start.elapsed() < std::time::Duration::from_millis(300) {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
        }
        let spent = usage(std::process::id()).expect("Linux /proc") - before;
        assert!(spent.cpu_seconds >= 0.1, "300 ms of spinning counted {} s", spent.cpu_seconds);
    }
}

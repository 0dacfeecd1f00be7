//! The measurements: latency percentiles, throughput under concurrency, streaming rate, a Raft-shaped
//! mix, connection setup, and the server's peak memory.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::contenders::{Client, Error};

/// p50 and p99 of `n` sequential unary calls, in microseconds.
pub async fn latency(client: &Client, payload: usize, n: usize) -> Result<(f64, f64), Error> {
    let data = Bytes::from(vec![1u8; payload]);
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let start = Instant::now();
        client.unary(data.clone()).await?;
        samples.push(start.elapsed());
    }
    Ok((percentile(&mut samples, 0.50), percentile(&mut samples, 0.99)))
}

/// The `q` quantile of the samples, in microseconds.
pub fn percentile(samples: &mut [Duration], q: f64) -> f64 {
    samples.sort_unstable();
    let i = ((samples.len() as f64 - 1.0) * q).round() as usize;
    samples[i].as_secs_f64() * 1e6
}

/// Calls per second with `callers` concurrent callers on one connection for `time`.
pub async fn throughput(client: &Client, payload: usize, callers: usize, time: Duration) -> Result<f64, Error> {
    let data = Bytes::from(vec![1u8; payload]);
    let done = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = start + time;
    let tasks: Vec<_> = (0..callers)
        .map(|_| {
            let (client, data, done) = (client.clone(), data.clone(), done.clone());
            tokio::spawn(async move {
                while Instant::now() < deadline {
                    client.unary(data.clone()).await?;
                    done.fetch_add(1, Ordering::Relaxed);
                }
                Ok::<_, Error>(())
            })
        })
        .collect();
    for t in tasks {
        t.await.map_err(|e| e.to_string())??;
    }
    Ok(done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64())
}

/// MB/s (10^6 bytes) of one stream of `total` bytes in `chunk`-byte messages, either way.
pub async fn streaming(client: &Client, total: u64, chunk: u32, download: bool) -> Result<f64, Error> {
    let start = Instant::now();
    let got = if download { client.download(total, chunk).await? } else { client.upload(total, chunk).await? };
    if got != total {
        return Err(format!("moved {got} of {total} bytes"));
    }
    Ok(total as f64 / 1e6 / start.elapsed().as_secs_f64())
}

/// Raft-shaped: 64 callers send 4 KiB AppendEntries-like calls while a heartbeat of 64 B goes every
/// 5 ms; returns the heartbeat p99 in microseconds.
pub async fn raft_mix(client: &Client, time: Duration) -> Result<f64, Error> {
    let stop = Arc::new(AtomicBool::new(false));
    let entries = Bytes::from(vec![2u8; 4096]);
    let load: Vec<_> = (0..64)
        .map(|_| {
            let (client, entries, stop) = (client.clone(), entries.clone(), stop.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    client.unary(entries.clone()).await?;
                }
                Ok::<_, Error>(())
            })
        })
        .collect();
    let heartbeat = Bytes::from(vec![3u8; 64]);
    let mut samples = vec![];
    let end = Instant::now() + time;
    let mut tick = tokio::time::interval(Duration::from_millis(5));
    while Instant::now() < end {
        tick.tick().await;
        let start = Instant::now();
        client.unary(heartbeat.clone()).await?;
        samples.push(start.elapsed());
    }
    stop.store(true, Ordering::Relaxed);
    for t in load {
        t.await.map_err(|e| e.to_string())??;
    }
    Ok(percentile(&mut samples, 0.99))
}

/// Peak resident memory of a process (VmHWM), in MiB; Linux only.
pub fn peak_memory_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

//! Calls every method of the node over one channel and reports who answered and how fast.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use duet::{Channel, Status, Transport};
use futures_util::StreamExt;

use crate::pb::grpc::health::v1::{HealthCheckRequest, HealthClient};
use crate::pb::node::v1::{NodeStatusClient, Sample};

/// One call's outcome.
#[derive(Debug, Clone)]
pub struct CallReport {
    /// `Service/Method`.
    pub method: &'static str,
    /// The transport that answered (from the response's extensions).
    pub transport: Option<Transport>,
    /// Wall time of the call.
    pub latency: Duration,
    /// What came back, in brief.
    pub summary: String,
}

async fn timed<T, F>(method: &'static str, call: F) -> Result<CallReport, Status>
where
    F: Future<Output = Result<(Option<Transport>, T), Status>>,
    T: std::fmt::Display,
{
    let start = Instant::now();
    let (transport, summary) = call.await?;
    Ok(CallReport { method, transport, latency: start.elapsed(), summary: summary.to_string() })
}

/// Calls every method of Health and NodeStatus through `channel`.
pub async fn call_every_method(channel: Channel) -> Result<Vec<CallReport>, Status> {
    let health = HealthClient::new(channel.clone()).with_default_timeout(Duration::from_secs(10));
    let status = NodeStatusClient::new(channel).with_default_timeout(Duration::from_secs(10));
    let samples = || futures_util::stream::iter((1..=5).map(|value| Sample { value }));
    let mut out = vec![];

    out.push(
        timed("Health/Check", async {
            let r = health.check(HealthCheckRequest::default()).await?;
            let t = r.extensions().get::<Transport>().copied();
            Ok((t, format!("{:?}", r.into_inner().status())))
        })
        .await?,
    );
    out.push(
        timed("Health/Watch", async {
            let r = health.watch(HealthCheckRequest::default()).await?;
            let t = r.extensions().get::<Transport>().copied();
            let first = r.into_inner().message().await?.ok_or_else(|| Status::internal("empty watch"))?;
            Ok((t, format!("first update {:?}", first.status())))
        })
        .await?,
    );
    out.push(
        timed("NodeStatus/GetStatus", async {
            let r = status.get_status(()).await?;
            let t = r.extensions().get::<Transport>().copied();
            let info = r.into_inner();
            Ok((t, format!("{} serving {}", info.name, info.services.join(", "))))
        })
        .await?,
    );
    out.push(
        timed("NodeStatus/Tally", async {
            let r = status.tally(samples()).await?;
            let t = r.extensions().get::<Transport>().copied();
            let reply = r.into_inner();
            Ok((t, format!("{} samples, total {}", reply.count, reply.total)))
        })
        .await?,
    );
    out.push(
        timed("NodeStatus/RunningTotal", async {
            let r = status.running_total(samples()).await?;
            let t = r.extensions().get::<Transport>().copied();
            let totals: Vec<i64> = r
                .into_inner()
                .map(|x| x.map(|x| x.total))
                .collect::<Vec<_>>()
                .await
                .into_iter()
                .collect::<Result<_, _>>()?;
            Ok((t, format!("totals {totals:?}")))
        })
        .await?,
    );
    Ok(out)
}

/// Renders reports as an aligned table.
pub fn table(rows: &[(&str, CallReport)]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{:<9} {:<25} {:<11} {:>10}  result", "channel", "method", "answered by", "latency");
    for (channel, r) in rows {
        let by = r.transport.map_or("?".to_string(), |t| t.to_string());
        let _ = writeln!(
            out,
            "{:<9} {:<25} {:<11} {:>8.2}ms  {}",
            channel,
            r.method,
            by,
            r.latency.as_secs_f64() * 1e3,
            r.summary
        );
    }
    out
}

//! `duet-load`: many connections, thousands of unary calls in flight, against a server in its own
//! process; every call carries a unique id that the server echoes, and every answer is accounted for.
//!
//! The pieces: the counting handler and its server ([`serve`]), the child process that runs it
//! ([`ServerProcess`]), the client connections ([`Connections`]), the book of answers ([`Ledger`]),
//! the two runs ([`load`], [`soak`]) and `/proc` sampling ([`ProcSample`]).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::ValueEnum;
use duet::iroh::Connector;
use duet::{Request, Response, Status, Streaming};
use iroh::Endpoint;

use crate::pb::{Blob, Size};

/// The transport a load run goes over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Transport {
    /// duet's gRPC path (tonic, HTTP/2 over TCP).
    Grpc,
    /// duet's native `duet/1` wire over Iroh (QUIC).
    Iroh,
}

impl Transport {
    /// The name used on the command line and in file names.
    pub fn name(self) -> &'static str {
        match self {
            Transport::Grpc => "grpc",
            Transport::Iroh => "iroh",
        }
    }

    /// The human label.
    pub fn label(self) -> &'static str {
        match self {
            Transport::Grpc => "duet gRPC",
            Transport::Iroh => "duet Iroh",
        }
    }
}

/// The bench service with a counter of the unary calls it handled; `Unary` echoes the payload (the
/// caller's id). The streaming methods are not used by the load test.
#[derive(Debug, Clone, Default)]
pub struct CountingBench {
    handled: Arc<AtomicU64>,
}

impl crate::pb::Bench for CountingBench {
    async fn unary(&self, request: Request<Blob>) -> Result<Response<Blob>, Status> {
        self.handled.fetch_add(1, Ordering::Relaxed);
        Ok(Response::new(request.into_inner()))
    }

    async fn download(&self, _: Request<Size>) -> Result<Response<duet::BoxStream<Blob>>, Status> {
        Err(Status::unimplemented("duet-load serves Unary only"))
    }

    async fn upload(&self, _: Request<Streaming<Blob>>) -> Result<Response<Size>, Status> {
        Err(Status::unimplemented("duet-load serves Unary only"))
    }
}

/// Serves [`CountingBench`] on one transport with `limit` calls in flight per connection; returns the
/// running server and its counter of handled calls.
pub async fn serve(transport: Transport, limit: u32) -> Result<(duet::ServerHandle, Arc<AtomicU64>), duet::Error> {
    let service = CountingBench::default();
    let handled = service.handled.clone();
    let server = duet::Server::builder().max_concurrent_calls_per_connection(limit);
    let server = match transport {
        Transport::Grpc => server.grpc(SocketAddr::from(([127, 0, 0, 1], 0))),
        Transport::Iroh => server.iroh(crate::contenders::bind(true).await),
    };
    let handle = server.add_service(crate::pb::BenchServer::new(service)).serve().await?;
    Ok((handle, handled))
}

/// The server side of [`ServerProcess`]: serves, prints `READY <ticket>`, answers each `count` line on
/// stdin with `COUNT <handled calls>`, and returns when stdin closes.
pub async fn run_server_process(transport: Transport, limit: u32) -> Result<(), Box<dyn std::error::Error>> {
    use tokio::io::AsyncBufReadExt;
    let (handle, handled) = serve(transport, limit).await?;
    println!("READY {}", handle.peer_addr());
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = lines.next_line().await? {
        if line.trim() == "count" {
            println!("COUNT {}", handled.load(Ordering::SeqCst));
        }
    }
    Ok(())
}

/// A server in a child process (this binary re-executed with `server <transport>`, as `duet-bench`
/// does), spoken to over its stdin and stdout; killed on drop.
pub struct ServerProcess {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    addr: String,
}

impl ServerProcess {
    /// Starts `current_exe server <transport> --limit <limit>` and waits for its `READY` line.
    pub fn spawn(transport: Transport, limit: u32) -> std::io::Result<Self> {
        let mut child = Command::new(std::env::current_exe()?)
            .args(["server", transport.name(), "--limit", &limit.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        let stdin = child.stdin.take();
        let mut stdout = BufReader::new(child.stdout.take().expect("piped"));
        let mut line = String::new();
        stdout.read_line(&mut line)?;
        let Some(addr) = line.strip_prefix("READY ") else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(std::io::Error::other(format!("server said {line:?}")));
        };
        let addr = addr.trim().to_owned();
        Ok(Self { child, stdin, stdout, addr })
    }

    /// The server's ticket (`duet:grpc=…` or `duet:iroh=…`).
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The server's count of handled calls since `before`, or why it cannot say (its exit status if
    /// it died).
    pub fn handled_since(&mut self, before: u64) -> Result<u64, String> {
        self.handled().map(|n| n - before).map_err(|e| match self.child.try_wait() {
            Ok(Some(status)) => format!("exited ({status}) before the end of the run"),
            _ => format!("did not answer its count: {e}"),
        })
    }

    /// How many unary calls the server's handler has run so far (its own counter).
    pub fn handled(&mut self) -> std::io::Result<u64> {
        let stdin = self.stdin.as_mut().ok_or_else(|| std::io::Error::other("stdin closed"))?;
        stdin.write_all(b"count\n")?;
        stdin.flush()?;
        let mut line = String::new();
        self.stdout.read_line(&mut line)?;
        line.strip_prefix("COUNT ")
            .and_then(|n| n.trim().parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("server said {line:?}")))
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `n` separate client connections to one server: `n` tonic channels (so `n` HTTP/2 connections), or
/// `n` Iroh endpoints, each with its own connector (so `n` QUIC connections).
pub struct Connections {
    /// One client per connection.
    pub clients: Vec<crate::pb::BenchClient>,
    endpoints: Vec<Endpoint>,
}

impl Connections {
    /// Opens the connections (gRPC eagerly; Iroh on the first call of each).
    pub async fn open(transport: Transport, addr: &str, n: usize) -> Result<Self, Box<dyn std::error::Error>> {
        let peer: duet::PeerAddr = addr.parse()?;
        let mut clients = vec![];
        let mut endpoints = vec![];
        for _ in 0..n {
            let channel = match transport {
                Transport::Grpc => duet::Channel::connect_grpc(peer.grpc_uri().ok_or("no gRPC address")?).await?,
                Transport::Iroh => {
                    let ep = duet::iroh::endpoint::bind_loopback().await?;
                    let channel =
                        duet::Channel::iroh(&Connector::new(ep.clone()), peer.iroh.clone().ok_or("no Iroh address")?);
                    endpoints.push(ep);
                    channel
                }
            };
            clients.push(crate::pb::BenchClient::new(channel));
        }
        Ok(Self { clients, endpoints })
    }

    /// Drops the clients and closes the Iroh endpoints.
    pub async fn close(self) {
        drop(self.clients);
        for ep in self.endpoints {
            ep.close().await;
        }
    }
}

/// The book of every call: what was sent and how each was answered.
pub struct Ledger {
    sent: AtomicU64,
    ok: AtomicU64,
    wrong_id: AtomicU64,
    no_answer: AtomicU64,
    in_flight: AtomicI64,
    max_in_flight: AtomicI64,
    errors: Mutex<BTreeMap<String, u64>>,
    first_errors: Mutex<Vec<String>>,
    /// Answers per id (by the id the answer carried), when ids are known in advance.
    table: Option<Vec<AtomicU8>>,
}

impl Ledger {
    /// A ledger; with `ids = Some(n)` it also counts answers per id for ids `0..n`, to find missing
    /// and duplicated ones directly.
    pub fn new(ids: Option<u64>) -> Self {
        Self {
            sent: AtomicU64::new(0),
            ok: AtomicU64::new(0),
            wrong_id: AtomicU64::new(0),
            no_answer: AtomicU64::new(0),
            in_flight: AtomicI64::new(0),
            max_in_flight: AtomicI64::new(0),
            errors: Mutex::default(),
            first_errors: Mutex::default(),
            table: ids.map(|n| (0..n).map(|_| AtomicU8::new(0)).collect()),
        }
    }

    /// Calls answered with their own id so far.
    pub fn ok(&self) -> u64 {
        self.ok.load(Ordering::Relaxed)
    }

    /// Calls sent so far.
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    /// Calls that failed in any way so far (status error, wrong id, no answer in time).
    pub fn failed(&self) -> u64 {
        self.wrong_id.load(Ordering::Relaxed)
            + self.no_answer.load(Ordering::Relaxed)
            + self.errors.lock().expect("ledger").values().sum::<u64>()
    }

    /// Calls in flight now.
    pub fn in_flight(&self) -> i64 {
        self.in_flight.load(Ordering::Relaxed)
    }

    fn error(&self, what: String, detail: String) {
        *self.errors.lock().expect("ledger").entry(what).or_default() += 1;
        let mut first = self.first_errors.lock().expect("ledger");
        if first.len() < 5 {
            first.push(detail);
        }
    }

    /// One call: sends `id`, expects `id` back within `watchdog`.
    pub async fn call(&self, client: &mut crate::pb::BenchClient, id: u64, watchdog: Duration) {
        self.sent.fetch_add(1, Ordering::Relaxed);
        let now = self.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
        self.max_in_flight.fetch_max(now, Ordering::Relaxed);
        let request = Blob { data: Bytes::copy_from_slice(&id.to_le_bytes()) };
        let answer = tokio::time::timeout(watchdog, client.unary(request)).await;
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        match answer {
            Err(_) => {
                self.no_answer.fetch_add(1, Ordering::Relaxed);
                let mut first = self.first_errors.lock().expect("ledger");
                if first.len() < 5 {
                    first.push(format!("id {id}: no answer within {watchdog:?}"));
                }
            }
            Ok(Err(status)) => {
                self.error(format!("{:?}", status.code()), format!("id {id}: {status}"));
            }
            Ok(Ok(reply)) => {
                let data = reply.into_inner().data;
                let Ok(bytes) = <[u8; 8]>::try_from(&data[..]) else {
                    self.wrong_id.fetch_add(1, Ordering::Relaxed);
                    self.error("malformed answer".into(), format!("id {id}: answer of {} bytes", data.len()));
                    return;
                };
                let got = u64::from_le_bytes(bytes);
                if let Some(slot) = self.table.as_ref().and_then(|t| t.get(got as usize)) {
                    slot.fetch_add(1, Ordering::Relaxed);
                }
                if got == id {
                    self.ok.fetch_add(1, Ordering::Relaxed);
                } else {
                    self.wrong_id.fetch_add(1, Ordering::Relaxed);
                    let mut first = self.first_errors.lock().expect("ledger");
                    if first.len() < 5 {
                        first.push(format!("id {id}: answered with id {got}"));
                    }
                }
            }
        }
    }

    /// The final account, with the server's count of handled calls.
    pub fn account(&self, server_handled: Result<u64, String>) -> Account {
        let mut first_errors = self.first_errors.lock().expect("ledger").clone();
        if let Err(e) = &server_handled {
            first_errors.push(format!("server process: {e}"));
        }
        let sent = self.sent();
        let (missing, duplicated) = match &self.table {
            Some(t) => {
                let t = &t[..(sent as usize).min(t.len())];
                let missing = t.iter().filter(|c| c.load(Ordering::Relaxed) == 0).count() as u64;
                let duplicated = t.iter().filter(|c| c.load(Ordering::Relaxed) > 1).count() as u64;
                (Some(missing), Some(duplicated))
            }
            None => (None, None),
        };
        Account {
            sent,
            ok: self.ok(),
            wrong_id: self.wrong_id.load(Ordering::Relaxed),
            no_answer: self.no_answer.load(Ordering::Relaxed),
            errors: self.errors.lock().expect("ledger").clone(),
            first_errors,
            missing,
            duplicated,
            server_handled: server_handled.ok(),
            max_in_flight: self.max_in_flight.load(Ordering::Relaxed).max(0) as u64,
        }
    }
}

/// How every call of a run was answered.
#[derive(Debug, Clone)]
pub struct Account {
    /// Calls sent, each with a unique id.
    pub sent: u64,
    /// Answered once, with their own id, no error.
    pub ok: u64,
    /// Answered with another id (or a malformed payload): a crossed or duplicated answer.
    pub wrong_id: u64,
    /// No answer within the per-call watchdog.
    pub no_answer: u64,
    /// Status errors by code.
    pub errors: BTreeMap<String, u64>,
    /// The first few failures, verbatim.
    pub first_errors: Vec<String>,
    /// Ids no answer carried (only with a per-id table).
    pub missing: Option<u64>,
    /// Ids more than one answer carried (only with a per-id table).
    pub duplicated: Option<u64>,
    /// The server's own count of handled calls during the run (`None`: the server process could not
    /// tell, e.g. it died).
    pub server_handled: Option<u64>,
    /// Most calls in flight at once, as the client saw them.
    pub max_in_flight: u64,
}

impl Account {
    /// Every call got exactly one answer, its own, and the server handled each exactly once.
    pub fn exactly_once(&self) -> bool {
        self.ok == self.sent
            && self.wrong_id == 0
            && self.no_answer == 0
            && self.errors.is_empty()
            && self.missing.unwrap_or(0) == 0
            && self.duplicated.unwrap_or(0) == 0
            && self.server_handled == Some(self.sent)
    }

    /// Status errors as `Code: n, …` (or `none`).
    pub fn errors_line(&self) -> String {
        if self.errors.is_empty() {
            return "none".into();
        }
        self.errors.iter().map(|(k, v)| format!("{k}: {v}")).collect::<Vec<_>>().join(", ")
    }
}

/// What a load run is asked to do.
#[derive(Debug, Clone)]
pub struct LoadPlan {
    /// Separate client connections.
    pub connections: usize,
    /// Calls kept in flight on each connection.
    pub in_flight: usize,
    /// The server's `max_concurrent_calls_per_connection`.
    pub server_limit: u32,
    /// Calls in all (ids `0..calls`), unless `duration` is set.
    pub calls: u64,
    /// Instead of a call count: keep the load up this long.
    pub duration: Option<Duration>,
    /// A call with no answer after this long counts as unanswered.
    pub watchdog: Duration,
}

/// The outcome of one load run on one transport.
#[derive(Debug, Clone)]
pub struct LoadResult {
    /// The transport.
    pub transport: Transport,
    /// The plan it ran.
    pub plan: LoadPlan,
    /// Wall time from the first call to the last answer.
    pub elapsed: Duration,
    /// The account of every call.
    pub account: Account,
    /// Peak resident memory of the server process (VmHWM), MiB.
    pub server_peak_mib: Option<f64>,
    /// Peak resident memory of the client process during this run (VmHWM, reset before it), MiB.
    pub client_peak_mib: Option<f64>,
    /// Server resident memory (VmRSS) and open fds after the run, connections still open.
    pub server_after: Option<ProcSample>,
}

impl LoadResult {
    /// Answered calls per second.
    pub fn rate(&self) -> f64 {
        self.account.ok as f64 / self.elapsed.as_secs_f64()
    }
}

/// Runs `plan` against a fresh server process on `transport`.
pub async fn load(transport: Transport, plan: &LoadPlan) -> Result<LoadResult, Box<dyn std::error::Error>> {
    let mut server = ServerProcess::spawn(transport, plan.server_limit)?;
    let conns = Connections::open(transport, server.addr(), plan.connections).await?;
    let before = server.handled()?;
    reset_peak_memory();
    let ledger = Arc::new(Ledger::new(if plan.duration.is_some() { None } else { Some(plan.calls) }));
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = plan.duration.map(|d| start + d);
    let total = if plan.duration.is_some() { u64::MAX } else { plan.calls };
    let mut tasks = vec![];
    for client in &conns.clients {
        for _ in 0..plan.in_flight {
            let (mut client, ledger, next, watchdog) = (client.clone(), ledger.clone(), next.clone(), plan.watchdog);
            tasks.push(tokio::spawn(async move {
                loop {
                    if deadline.is_some_and(|d| Instant::now() >= d) {
                        break;
                    }
                    let id = next.fetch_add(1, Ordering::Relaxed);
                    if id >= total {
                        break;
                    }
                    ledger.call(&mut client, id, watchdog).await;
                }
            }));
        }
    }
    let progress = spawn_progress(ledger.clone(), start);
    for t in tasks {
        t.await?;
    }
    let elapsed = start.elapsed();
    progress.abort();
    let handled = server.handled_since(before);
    let result = LoadResult {
        transport,
        plan: plan.clone(),
        elapsed,
        account: ledger.account(handled),
        server_peak_mib: crate::workloads::peak_memory_mib(server.pid()),
        client_peak_mib: crate::workloads::peak_memory_mib(std::process::id()),
        server_after: ProcSample::of(server.pid()),
    };
    conns.close().await;
    drop(server);
    Ok(result)
}

fn spawn_progress(ledger: Arc<Ledger>, start: Instant) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        tick.tick().await;
        let mut last = 0;
        loop {
            tick.tick().await;
            let ok = ledger.ok();
            eprintln!(
                "  {:>5.0} s: {ok} answered ({:.0}/s over the last 5 s), {} in flight, {} failed",
                start.elapsed().as_secs_f64(),
                (ok - last) as f64 / 5.0,
                ledger.in_flight(),
                ledger.failed()
            );
            last = ok;
        }
    })
}

/// Resets this process's VmHWM to its current RSS (Linux `clear_refs` 5); best effort.
pub fn reset_peak_memory() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// Resident memory and open file descriptors of a process, from `/proc`.
#[derive(Debug, Clone, Copy)]
pub struct ProcSample {
    /// VmRSS, MiB.
    pub rss_mib: f64,
    /// Entries in `/proc/<pid>/fd`.
    pub fds: u64,
}

impl ProcSample {
    /// Samples process `pid`; `None` if it is gone or this is not Linux.
    pub fn of(pid: u32) -> Option<Self> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
        let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
        let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as u64;
        Some(Self { rss_mib: kib / 1024.0, fds })
    }
}

/// What a soak run is asked to do.
#[derive(Debug, Clone)]
pub struct SoakPlan {
    /// How long the load stays up.
    pub duration: Duration,
    /// How often the processes are sampled.
    pub every: Duration,
    /// Separate client connections.
    pub connections: usize,
    /// Calls kept in flight on each connection.
    pub in_flight: usize,
    /// The server's `max_concurrent_calls_per_connection`.
    pub server_limit: u32,
    /// A call with no answer after this long counts as unanswered.
    pub watchdog: Duration,
}

/// One point of the soak curve.
#[derive(Debug, Clone, Copy)]
pub struct SoakPoint {
    /// Seconds since the load started (0: before the first call).
    pub t: f64,
    /// The server process.
    pub server: ProcSample,
    /// This (client) process.
    pub client: ProcSample,
    /// Answered calls per second since the previous point.
    pub rate: f64,
    /// Answered calls so far.
    pub answered: u64,
    /// Failed calls so far.
    pub failed: u64,
}

/// The outcome of a soak on one transport.
#[derive(Debug, Clone)]
pub struct SoakResult {
    /// The transport.
    pub transport: Transport,
    /// The plan it ran.
    pub plan: SoakPlan,
    /// Samples under load: t = 0 (connections open, no call yet), then one per `every`.
    pub points: Vec<SoakPoint>,
    /// A sample after the load stopped and every call returned (connections still open).
    pub after: Option<SoakPoint>,
    /// Wall time of the load.
    pub elapsed: Duration,
    /// The account of every call.
    pub account: Account,
}

/// Keeps `connections × in_flight` calls in flight for `duration` against a fresh server process,
/// sampling both processes every `every`.
pub async fn soak(transport: Transport, plan: &SoakPlan) -> Result<SoakResult, Box<dyn std::error::Error>> {
    let mut server = ServerProcess::spawn(transport, plan.server_limit)?;
    let conns = Connections::open(transport, server.addr(), plan.connections).await?;
    let before = server.handled()?;
    let ledger = Arc::new(Ledger::new(None));
    let stop = Arc::new(AtomicBool::new(false));
    let next = Arc::new(AtomicU64::new(0));
    let pid = server.pid();
    let sample = |t: f64, rate: f64, ledger: &Ledger| -> Option<SoakPoint> {
        Some(SoakPoint {
            t,
            server: ProcSample::of(pid)?,
            client: ProcSample::of(std::process::id())?,
            rate,
            answered: ledger.ok(),
            failed: ledger.failed(),
        })
    };
    let mut points = vec![sample(0.0, 0.0, &ledger).ok_or("cannot sample /proc")?];
    let start = Instant::now();
    let mut tasks = vec![];
    for client in &conns.clients {
        for _ in 0..plan.in_flight {
            let (mut client, ledger, next, stop, watchdog) =
                (client.clone(), ledger.clone(), next.clone(), stop.clone(), plan.watchdog);
            tasks.push(tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let id = next.fetch_add(1, Ordering::Relaxed);
                    ledger.call(&mut client, id, watchdog).await;
                }
            }));
        }
    }
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + plan.every, plan.every);
    let (mut last_ok, mut last_t) = (0, 0.0);
    loop {
        tick.tick().await;
        let t = start.elapsed().as_secs_f64();
        let ok = ledger.ok();
        let point = sample(t, (ok - last_ok) as f64 / (t - last_t), &ledger).ok_or("server process is gone")?;
        eprintln!(
            "  {:>6.0} s  server {:>7.1} MiB {:>4} fds   client {:>7.1} MiB {:>4} fds   {:>8.0} calls/s   {} failed",
            t, point.server.rss_mib, point.server.fds, point.client.rss_mib, point.client.fds, point.rate, point.failed
        );
        points.push(point);
        (last_ok, last_t) = (ok, t);
        if start.elapsed() + plan.every / 2 >= plan.duration {
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await?;
    }
    let elapsed = start.elapsed();
    let handled = server.handled_since(before);
    let after = sample(elapsed.as_secs_f64(), 0.0, &ledger);
    conns.close().await;
    drop(server);
    Ok(SoakResult { transport, plan: plan.clone(), points, after, elapsed, account: ledger.account(handled) })
}

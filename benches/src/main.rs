//! `duet-bench`: runs every contender's server in its own process and measures it from this one,
//! then prints one markdown table (with ratios to tonic over TCP and to the raw Iroh ceiling) and
//! writes it, with an SVG chart, to the results folder.
//!
//! ```text
//! cargo run --release -p duet-bench                 # the full run (a few minutes)
//! cargo run --release -p duet-bench -- --quick      # a smoke run (seconds)
//! ```

#![forbid(unsafe_code)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand, ValueEnum};
use duet_bench::contenders::{self, Contender};
use duet_bench::cost;
use duet_bench::report::Results;
use duet_bench::workloads;

#[derive(Parser)]
#[command(about = "duet side by side with tonic, the HTTP/2 bridge and the raw QUIC ceiling")]
struct Cli {
    /// Short runs, to check the bench works (figures are not meaningful).
    #[arg(long)]
    quick: bool,
    /// Contenders to run (default: all).
    #[arg(long, value_enum, value_delimiter = ',')]
    contenders: Vec<Contender>,
    /// Workload groups to run (default: all).
    #[arg(long, value_enum, value_delimiter = ',')]
    workloads: Vec<Group>,
    /// Rounds of every workload on every contender (the table shows each cell's median).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Where the table and chart go.
    #[arg(long, default_value = "bench-results")]
    out: PathBuf,
    #[command(subcommand)]
    command: Option<Cmd>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Internal: serve one contender and print its address.
    Server {
        #[arg(value_enum)]
        contender: Contender,
    },
    /// CPU time and thread switches per unary call (or per MiB streamed), in the client and in the
    /// server process: the figure to compare when tuning (rates swing with the machine's other load).
    Cost {
        /// Contenders to measure (default: all).
        #[arg(long, value_enum, value_delimiter = ',')]
        contenders: Vec<Contender>,
        /// What to measure: unary calls, or 64 MiB streamed per call.
        #[arg(long, value_enum, default_value = "unary")]
        workload: cost::Workload,
        /// Payload size in bytes: each way for unary, per message for streaming (default 64 for
        /// unary, 65536 for streaming).
        #[arg(long)]
        size: Option<usize>,
        /// Concurrent callers on the one connection.
        #[arg(long, value_delimiter = ',', default_value = "1,64")]
        callers: Vec<usize>,
        /// Calls per measurement (default 20 000 unary calls, or 8 streams of 64 MiB).
        #[arg(long)]
        calls: Option<u64>,
        /// Rounds (the table shows medians).
        #[arg(long, default_value_t = 3)]
        rounds: usize,
    },
}

/// Groups of workloads, to run part of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Group {
    /// Connection setup.
    Setup,
    /// Unary latency and throughput, and server memory.
    Unary,
    /// 64 MiB download and upload.
    Streaming,
    /// The Raft-shaped mix.
    Raft,
}

struct ServerProcess(Child);

impl Drop for ServerProcess {
    fn drop(&mut self) {
        // A profiler wrapping the server writes its report on SIGTERM, not on SIGKILL.
        let term = std::env::var_os("DUET_BENCH_SERVER_WRAPPER").is_some()
            && Command::new("kill").args(["-TERM", &self.0.id().to_string()]).status().is_ok_and(|s| s.success());
        if !term {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

fn spawn_server(c: Contender) -> Result<(ServerProcess, String), Box<dyn std::error::Error>> {
    let name = c.to_possible_value().expect("value").get_name().to_owned();
    let exe = std::env::current_exe()?;
    // A profiler to run the server under, such as `valgrind --tool=callgrind` (BENCHMARKS.md).
    let wrapper = std::env::var("DUET_BENCH_SERVER_WRAPPER").unwrap_or_default();
    let mut words = wrapper.split_whitespace();
    let mut command = match words.next() {
        Some(program) => {
            let mut c = Command::new(program);
            c.args(words).arg(&exe);
            c
        }
        None => Command::new(&exe),
    };
    let mut child = command.args(["server", &name]).stdout(Stdio::piped()).spawn()?;
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("piped")).read_line(&mut line)?;
    let addr = line.strip_prefix("READY ").ok_or_else(|| format!("server said {line:?}"))?.trim().to_owned();
    Ok((ServerProcess(child), addr))
}

struct Plan {
    payloads: [(usize, &'static str, usize); 4],
    callers: [usize; 3],
    time: Duration,
    stream_bytes: u64,
    setups: usize,
    rounds: usize,
}

/// One contender, up: its server process and a warm client on one connection.
struct Live {
    c: Contender,
    server: ServerProcess,
    addr: String,
    ep: iroh::Endpoint,
    client: contenders::Client,
}

impl Live {
    /// Closes the client's endpoint, then stops the server process.
    async fn stop(self) {
        drop(self.client);
        self.ep.close().await;
        drop(self.server);
    }
}

async fn start(c: Contender) -> Result<Live, Box<dyn std::error::Error>> {
    let (server, addr) = spawn_server(c)?;
    let ep = contenders::bind(c != Contender::RawIrohDefaults).await;
    let client = contenders::connect(c, &addr, &ep).await;
    for _ in 0..50 {
        client.unary(bytes::Bytes::from_static(b"warm up")).await?;
    }
    Ok(Live { c, server, addr, ep, client })
}

/// The workloads, in the order each round runs them.
#[derive(Clone, Copy)]
enum Step {
    Setup,
    Latency(usize),
    Throughput(usize, usize),
    Memory,
    Download,
    Upload,
    Raft,
}

/// One row's samples: name, unit, whether more is better, and the values per contender.
type SampleRow = (String, &'static str, bool, std::collections::BTreeMap<Contender, Vec<f64>>);

/// Samples per row and contender, across rounds; the table gets each one's median.
#[derive(Default)]
struct Samples {
    rows: Vec<SampleRow>,
}

impl Samples {
    fn push(&mut self, name: String, unit: &'static str, higher: bool, c: Contender, v: f64) {
        let row = match self.rows.iter().position(|r| r.0 == name) {
            Some(i) => &mut self.rows[i],
            None => {
                self.rows.push((name, unit, higher, Default::default()));
                self.rows.last_mut().expect("just pushed")
            }
        };
        row.3.entry(c).or_default().push(v);
    }

    /// Every round's value of every cell, in the order measured: the spread behind each median.
    fn rounds_markdown(&self, contenders: &[Contender]) -> String {
        use std::fmt::Write as _;
        let mut out = duet_bench::report::table_head(contenders);
        for (name, unit, _, values) in &self.rows {
            let _ = write!(out, "| {name} | {unit} |");
            for c in contenders {
                let cell = values
                    .get(c)
                    .map_or("–".to_string(), |v| v.iter().map(|x| format!("{x:.1}")).collect::<Vec<_>>().join(", "));
                let _ = write!(out, " {cell} |");
            }
            out.push('\n');
        }
        out
    }

    fn medians(self) -> Results {
        let mut results = Results::default();
        for (name, unit, higher, values) in self.rows {
            for (c, mut v) in values {
                v.sort_by(f64::total_cmp);
                results.put(&name, unit, higher, c, v[v.len() / 2]);
            }
        }
        results
    }
}

async fn run_step(
    live: &Live,
    step: Step,
    plan: &Plan,
    s: &mut Samples,
    round: usize,
) -> Result<(), Box<dyn std::error::Error>> {
    let (c, client) = (live.c, &live.client);
    match step {
        Step::Setup => {
            let mut setup = vec![];
            for _ in 0..plan.setups {
                let fresh = contenders::bind(c != Contender::RawIrohDefaults).await;
                let start = Instant::now();
                contenders::connect(c, &live.addr, &fresh).await.unary(bytes::Bytes::from_static(b"hello")).await?;
                setup.push(start.elapsed());
                fresh.close().await;
            }
            s.push("connection setup: first call, p50".into(), "µs", false, c, workloads::percentile(&mut setup, 0.5));
        }
        Step::Latency(i) => {
            let (size, label, n) = plan.payloads[i];
            let (p50, p99) = workloads::latency(client, size, n).await?;
            s.push(format!("unary {label}, p50"), "µs", false, c, p50);
            s.push(format!("unary {label}, p99"), "µs", false, c, p99);
        }
        Step::Throughput(i, callers) => {
            let (size, label, _) = plan.payloads[i];
            let rate = workloads::throughput(client, size, callers, plan.time).await?;
            s.push(format!("unary {label}, {callers} callers"), "calls/s", true, c, rate);
        }
        Step::Memory => {
            // VmHWM only grows: read once, after the first round's unary runs and before any stream.
            if round == 0
                && let Some(mib) = workloads::peak_memory_mib(live.server.0.id())
            {
                s.push("server peak memory after the unary runs".into(), "MiB", false, c, mib);
            }
        }
        Step::Download | Step::Upload => {
            let mb = plan.stream_bytes;
            let label = if mb >= 64 << 20 { "64 MiB".to_string() } else { format!("{} MiB", mb >> 20) };
            let down = matches!(step, Step::Download);
            let rate = workloads::streaming(client, mb, 65_536, down).await?;
            let what = if down { "download" } else { "upload" };
            s.push(format!("{what} {label} (64 KiB msgs)"), "MB/s", true, c, rate);
        }
        Step::Raft => {
            let p99 = workloads::raft_mix(client, plan.time).await?;
            s.push("raft mix: 64×4 KiB in flight, heartbeat p99".into(), "µs", false, c, p99);
        }
    }
    Ok(())
}

/// Every contender's server runs at once (idle but for the one measured), and each workload runs
/// on every contender in turn, round after round, starting with a different contender each round:
/// a slow minute on this shared machine then touches every contender alike, and the table takes
/// each cell's median over the rounds.
async fn measure_all(
    contenders: &[Contender],
    groups: &[Group],
    plan: &Plan,
) -> Result<(Results, String), Box<dyn std::error::Error>> {
    let all = [Group::Setup, Group::Unary, Group::Streaming, Group::Raft];
    let groups = if groups.is_empty() { &all[..] } else { groups };
    let mut lives = vec![];
    for c in contenders {
        lives.push(start(*c).await?);
    }
    let mut steps = vec![];
    if groups.contains(&Group::Setup) {
        steps.push(Step::Setup);
    }
    if groups.contains(&Group::Unary) {
        for i in 0..plan.payloads.len() {
            steps.push(Step::Latency(i));
            for callers in plan.callers {
                steps.push(Step::Throughput(i, callers));
            }
        }
        steps.push(Step::Memory);
    }
    if groups.contains(&Group::Streaming) {
        steps.extend([Step::Download, Step::Upload]);
    }
    if groups.contains(&Group::Raft) {
        steps.push(Step::Raft);
    }
    let mut samples = Samples::default();
    for round in 0..plan.rounds {
        eprintln!("round {} of {}", round + 1, plan.rounds);
        for step in &steps {
            for k in 0..lives.len() {
                let live = &lives[(k + round) % lives.len()];
                run_step(live, *step, plan, &mut samples, round).await?;
            }
        }
    }
    for live in lives {
        live.stop().await;
    }
    let rounds = samples.rounds_markdown(contenders);
    Ok((samples.medians(), rounds))
}

/// Per-call CPU cost of each contender, client and server side, interleaved round by round as the
/// main table is; prints a markdown table of medians.
async fn measure_cost(
    contenders: &[Contender],
    workload: cost::Workload,
    size: usize,
    callers: &[usize],
    calls: u64,
    rounds: usize,
) -> Result<(), Box<dyn std::error::Error>> {
    let mut lives = vec![];
    for c in contenders {
        lives.push(start(*c).await?);
    }
    let me = std::process::id();
    // (contender, callers) -> per-call samples: client µs, server µs, client switches, server
    // switches, datagrams the client received and UDP bytes it sent (Iroh contenders; 0 for TCP).
    let mut samples: std::collections::BTreeMap<(usize, usize), Vec<[f64; 6]>> = Default::default();
    for round in 0..rounds {
        eprintln!("round {} of {rounds}", round + 1);
        for &n in callers {
            for k in 0..lives.len() {
                let idx = (k + round) % lives.len();
                let live = &lives[idx];
                let pid = live.server.0.id();
                let socket = &live.ep.metrics().socket;
                let datagrams = || (socket.recv_datagrams.get(), socket.send_ipv4.get());
                let (c0, s0) = (cost::usage(me).ok_or("no /proc")?, cost::usage(pid).ok_or("no /proc")?);
                let d0 = datagrams();
                let units = workload.run(&live.client, size, n, calls).await?;
                let d1 = datagrams();
                let (c1, s1) = (cost::usage(me).ok_or("no /proc")?, cost::usage(pid).ok_or("no /proc")?);
                let (c, s) = (c1 - c0, s1 - s0);
                let per = |x: f64| x / units;
                samples.entry((idx, n)).or_default().push([
                    per(c.cpu_seconds * 1e6),
                    per(s.cpu_seconds * 1e6),
                    per(c.switches as f64),
                    per(s.switches as f64),
                    per((d1.0 - d0.0) as f64),
                    per((d1.1 - d0.1) as f64),
                ]);
            }
        }
    }
    let u = workload.unit();
    println!(
        "| contender | callers | client CPU µs/{u} | server CPU µs/{u} | both | client switches/{u} | server switches/{u} | datagrams to the client/{u} | UDP bytes from the client/{u} |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for ((idx, n), mut rows) in samples {
        let median = |rows: &mut Vec<[f64; 6]>, i: usize| {
            rows.sort_by(|a, b| a[i].total_cmp(&b[i]));
            rows[rows.len() / 2][i]
        };
        let (cc, sc) = (median(&mut rows, 0), median(&mut rows, 1));
        let (cs, ss) = (median(&mut rows, 2), median(&mut rows, 3));
        let (dg, sent) = (median(&mut rows, 4), median(&mut rows, 5));
        println!(
            "| {} | {n} | {cc:.1} | {sc:.1} | {:.1} | {cs:.2} | {ss:.2} | {dg:.2} | {sent:.0} |",
            lives[idx].c.label(),
            cc + sc
        );
    }
    for live in lives {
        live.stop().await;
    }
    Ok(())
}

/// Installs a log subscriber, as every service does: `RUST_LOG`, else `warn`, to stderr. With none
/// at all, tracing hands every span of every contender (h2's, noq's, duet's) to the `log` crate, as
/// its `log` feature (which noq-udp turns on) asks: thousands of instructions a call that no service
/// which logs pays. Above `warn`, iroh's own `info` spans (its socket actor, each remote's actor)
/// are entered on every packet and cost every QUIC contender alike (BENCHMARKS.md measures it):
/// `RUST_LOG=info` shows what a service logging at `info` pays.
fn logs() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    logs();
    let cli = Cli::parse();
    match cli.command {
        Some(Cmd::Server { contender }) => {
            let addr = contenders::serve(contender).await;
            println!("READY {addr}");
            std::future::pending::<()>().await;
            return Ok(());
        }
        Some(Cmd::Cost { contenders, workload, size, callers, calls, rounds }) => {
            let contenders = if contenders.is_empty() { Contender::ALL.to_vec() } else { contenders };
            let size = size.unwrap_or(workload.default_size());
            let calls = calls.unwrap_or(workload.default_calls());
            return measure_cost(&contenders, workload, size, &callers, calls, rounds).await;
        }
        None => {}
    }
    let plan = if cli.quick {
        Plan {
            payloads: [(64, "64 B", 50), (4096, "4 KiB", 50), (65_536, "64 KiB", 20), (1 << 20, "1 MiB", 5)],
            callers: [1, 16, 64],
            time: Duration::from_millis(150),
            stream_bytes: 4 << 20,
            setups: 3,
            rounds: 1,
        }
    } else {
        Plan {
            payloads: [(64, "64 B", 5000), (4096, "4 KiB", 3000), (65_536, "64 KiB", 1000), (1 << 20, "1 MiB", 100)],
            callers: [1, 16, 64],
            time: Duration::from_secs(1),
            stream_bytes: 64 << 20,
            setups: 20,
            rounds: cli.rounds,
        }
    };
    let contenders = if cli.contenders.is_empty() { Contender::ALL.to_vec() } else { cli.contenders.clone() };
    let (results, rounds) = measure_all(&contenders, &cli.workloads, &plan).await?;
    let table = results.markdown(&contenders);
    println!("{table}");
    std::fs::create_dir_all(&cli.out)?;
    std::fs::write(cli.out.join("results.md"), &table)?;
    std::fs::write(cli.out.join("rounds.md"), &rounds)?;
    results.svg(&contenders, &cli.out.join("results.svg"))?;
    eprintln!(
        "wrote {}, {} (every round's value) and {}",
        cli.out.join("results.md").display(),
        cli.out.join("rounds.md").display(),
        cli.out.join("results.svg").display()
    );
    Ok(())
}

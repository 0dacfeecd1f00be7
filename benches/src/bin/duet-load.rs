//! `duet-load`: load and soak tests of duet's two transports, each against a server in its own
//! process, with a check that every call got exactly one answer (its own).
//!
//! ```text
//! cargo run --release -p duet-bench --bin duet-load -- load             # 10 × 1000 in flight, 1M calls each
//! cargo run --release -p duet-bench --bin duet-load -- soak --minutes 5  # 10 × 100 in flight, sampled every 5 s
//! cargo run -p duet-bench --bin duet-load -- --quick                     # CI smoke: quick load and soak
//! ```
//!
//! Both transports unless `--transport grpc|iroh`; tables, CSV and SVG go to `--out` (default
//! `bench-results`). With no subcommand it runs `load` (and, with `--quick`, a quick soak after it).
//!
//! ```text
//! duet-load [--quick] [--transport grpc|iroh|both] [--out DIR] [load [--connections N] [--in-flight N]
//!           [--calls N | --seconds S] [--server-limit N]]
//! duet-load [--quick] [--transport …] [--out DIR] soak [--minutes M] [--every S] [--connections N] [--in-flight N]
//! ```
//!
//! Exits 1 if any call did not get exactly one answer, or the server's count of handled calls differs
//! from the calls sent.

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use duet_bench::load::{self, LoadPlan, SoakPlan, Transport};
use duet_bench::load_report;

#[derive(Parser)]
#[command(about = "load and soak tests of duet's gRPC and Iroh paths, with an exactly-one-answer check")]
struct Cli {
    /// Small numbers, a few seconds per transport (a CI smoke run; figures are not meaningful). With
    /// no subcommand: a quick load, then a quick soak.
    #[arg(long, global = true)]
    quick: bool,
    /// Which transport(s) to run.
    #[arg(long, value_enum, default_value = "both", global = true)]
    transport: Which,
    /// Seconds a call may go unanswered before it counts as lost (a hang), not slow.
    #[arg(long, default_value_t = 60.0, global = true)]
    watchdog: f64,
    /// Where the tables, CSV and charts go.
    #[arg(long, default_value = "bench-results", global = true)]
    out: PathBuf,
    #[command(subcommand)]
    command: Option<Cmd>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Which {
    Grpc,
    Iroh,
    Both,
}

impl Which {
    fn transports(self) -> Vec<Transport> {
        match self {
            Which::Grpc => vec![Transport::Grpc],
            Which::Iroh => vec![Transport::Iroh],
            Which::Both => vec![Transport::Grpc, Transport::Iroh],
        }
    }
}

#[derive(Subcommand)]
enum Cmd {
    /// Many calls in flight over many connections; throughput, peak memory, every answer checked.
    Load {
        /// Separate client connections (default 10; quick: 10).
        #[arg(long)]
        connections: Option<usize>,
        /// Calls in flight on each connection (default 1000; quick: 200).
        #[arg(long)]
        in_flight: Option<usize>,
        /// Calls per transport, each with a unique id (default 1,000,000; quick: 5,000).
        #[arg(long)]
        calls: Option<u64>,
        /// Run for this many seconds instead of a call count (ids then checked call by call).
        #[arg(long)]
        seconds: Option<f64>,
        /// The server's max_concurrent_calls_per_connection.
        #[arg(long, default_value_t = 100)]
        server_limit: u32,
    },
    /// Steady load for N minutes; RSS and open fds of server and client sampled as it runs.
    Soak {
        /// Minutes of load per transport (default 5; quick: 0.1, i.e. 6 s).
        #[arg(long)]
        minutes: Option<f64>,
        /// Seconds between samples (default 5; quick: 2).
        #[arg(long)]
        every: Option<f64>,
        /// Separate client connections.
        #[arg(long, default_value_t = 10)]
        connections: usize,
        /// Calls in flight on each connection (default 100; quick: 10).
        #[arg(long)]
        in_flight: Option<usize>,
        /// The server's max_concurrent_calls_per_connection.
        #[arg(long, default_value_t = 100)]
        server_limit: u32,
    },
    /// Internal: serve the counting bench service on one transport and print its address.
    #[command(hide = true)]
    Server {
        #[arg(value_enum)]
        wire: Transport,
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
}

fn load_plan(quick: bool, connections: Option<usize>, in_flight: Option<usize>, calls: Option<u64>) -> LoadPlan {
    LoadPlan {
        connections: connections.unwrap_or(10),
        in_flight: in_flight.unwrap_or(if quick { 200 } else { 1000 }),
        server_limit: 100,
        calls: calls.unwrap_or(if quick { 5_000 } else { 1_000_000 }),
        duration: None,
        watchdog: Duration::from_secs(60),
    }
}

fn soak_plan(
    quick: bool,
    minutes: Option<f64>,
    every: Option<f64>,
    connections: usize,
    in_flight: Option<usize>,
) -> SoakPlan {
    SoakPlan {
        duration: Duration::from_secs_f64(minutes.unwrap_or(if quick { 0.1 } else { 5.0 }) * 60.0),
        every: Duration::from_secs_f64(every.unwrap_or(if quick { 2.0 } else { 5.0 })),
        connections,
        in_flight: in_flight.unwrap_or(if quick { 10 } else { 100 }),
        server_limit: 100,
        watchdog: Duration::from_secs(60),
    }
}

async fn run_load(cli: &Cli, plan: &LoadPlan) -> Result<bool, Box<dyn std::error::Error>> {
    let mut results = vec![];
    for t in cli.transport.transports() {
        eprintln!(
            "load, {}: {} connections × {} in flight, server limit {} per connection, {}",
            t.label(),
            plan.connections,
            plan.in_flight,
            plan.server_limit,
            plan.duration.map_or(format!("{} calls", plan.calls), |d| format!("{:.0} s", d.as_secs_f64()))
        );
        let r = load::load(t, plan).await?;
        eprintln!(
            "  {} sent, {} answered once, {:.0} calls/s, server peak {:.1} MiB, exactly once: {}",
            r.account.sent,
            r.account.ok,
            r.rate(),
            r.server_peak_mib.unwrap_or(f64::NAN),
            r.account.exactly_once()
        );
        results.push(r);
    }
    let mut table = load_report::load_markdown(&results);
    for r in &results {
        table.push_str(&load_report::failures(r.transport.label(), &r.account));
    }
    println!("{table}");
    std::fs::create_dir_all(&cli.out)?;
    let path = cli.out.join("load.md");
    std::fs::write(&path, &table)?;
    eprintln!("wrote {}", path.display());
    Ok(results.iter().all(|r| r.account.exactly_once()))
}

async fn run_soak(cli: &Cli, plan: &SoakPlan) -> Result<bool, Box<dyn std::error::Error>> {
    let mut ok = true;
    std::fs::create_dir_all(&cli.out)?;
    for t in cli.transport.transports() {
        eprintln!(
            "soak, {}: {} connections × {} in flight, server limit {} per connection, {:.1} min, sampled every {:?}",
            t.label(),
            plan.connections,
            plan.in_flight,
            plan.server_limit,
            plan.duration.as_secs_f64() / 60.0,
            plan.every
        );
        let r = load::soak(t, plan).await?;
        let mut md = load_report::soak_markdown(&r);
        md.push_str(&load_report::failures(t.label(), &r.account));
        println!("{md}");
        let base = cli.out.join(format!("soak-{}", t.name()));
        std::fs::write(base.with_extension("md"), &md)?;
        std::fs::write(base.with_extension("csv"), load_report::soak_csv(&r))?;
        load_report::soak_svg(&r, &base.with_extension("svg"))?;
        eprintln!("wrote {}.{{md,csv,svg}}", base.display());
        ok &= r.account.exactly_once();
    }
    Ok(ok)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let cli = Cli::parse();
    let watchdog = Duration::from_secs_f64(cli.watchdog);
    let ok = match &cli.command {
        Some(Cmd::Server { wire, limit }) => {
            load::run_server_process(*wire, *limit).await?;
            return Ok(());
        }
        Some(Cmd::Load { connections, in_flight, calls, seconds, server_limit }) => {
            let mut plan = load_plan(cli.quick, *connections, *in_flight, *calls);
            plan.server_limit = *server_limit;
            plan.duration = seconds.map(Duration::from_secs_f64);
            plan.watchdog = watchdog;
            run_load(&cli, &plan).await?
        }
        Some(Cmd::Soak { minutes, every, connections, in_flight, server_limit }) => {
            let mut plan = soak_plan(cli.quick, *minutes, *every, *connections, *in_flight);
            plan.server_limit = *server_limit;
            plan.watchdog = watchdog;
            run_soak(&cli, &plan).await?
        }
        None => {
            let load_ok = run_load(&cli, &LoadPlan { watchdog, ..load_plan(cli.quick, None, None, None) }).await?;
            let soak = SoakPlan { watchdog, ..soak_plan(true, None, None, 10, None) };
            let soak_ok = !cli.quick || run_soak(&cli, &soak).await?;
            load_ok && soak_ok
        }
    };
    if !ok {
        eprintln!("FAILED: some call did not get exactly one answer (see the table)");
        std::process::exit(1);
    }
    Ok(())
}

//! `duet-bench`: runs every contender's server in its own process and measures it from this one,
//! then prints one markdown table (with ratios to tonic over TCP and to the raw Iroh ceiling) and
//! writes it, with an SVG chart, to the results folder.
//!
//! ```text
//! cargo run --release -p duet-bench                 # the full run (a few minutes)
//! cargo run --release -p duet-bench -- --quick      # a smoke run (seconds)
//! ```

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand, ValueEnum};
use duet_bench::contenders::{self, Contender};
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
}

struct ServerProcess(Child);

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_server(c: Contender) -> Result<(ServerProcess, String), Box<dyn std::error::Error>> {
    let name = c.to_possible_value().expect("value").get_name().to_owned();
    let mut child = Command::new(std::env::current_exe()?).args(["server", &name]).stdout(Stdio::piped()).spawn()?;
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
}

async fn measure(c: Contender, plan: &Plan, results: &mut Results) -> Result<(), Box<dyn std::error::Error>> {
    let (server, addr) = spawn_server(c)?;
    let ep = contenders::bind(c != Contender::RawIrohDefaults).await;

    let mut setup = vec![];
    for _ in 0..plan.setups {
        let fresh = contenders::bind(c != Contender::RawIrohDefaults).await;
        let start = Instant::now();
        contenders::connect(c, &addr, &fresh).await.unary(bytes::Bytes::from_static(b"hello")).await?;
        setup.push(start.elapsed());
        fresh.close().await;
    }
    results.put("connection setup: first call, p50", "µs", false, c, workloads::percentile(&mut setup, 0.5));

    let client = contenders::connect(c, &addr, &ep).await;
    for _ in 0..50 {
        client.unary(bytes::Bytes::from_static(b"warm up")).await?;
    }
    for (size, label, n) in plan.payloads {
        eprintln!("  unary {label}");
        let (p50, p99) = workloads::latency(&client, size, n).await?;
        results.put(&format!("unary {label}, p50"), "µs", false, c, p50);
        results.put(&format!("unary {label}, p99"), "µs", false, c, p99);
        for callers in plan.callers {
            eprintln!("    {callers} callers");
            let rate = workloads::throughput(&client, size, callers, plan.time).await?;
            results.put(&format!("unary {label}, {callers} callers"), "calls/s", true, c, rate);
        }
    }
    if let Some(mib) = workloads::peak_memory_mib(server.0.id()) {
        results.put("server peak memory after the unary runs", "MiB", false, c, mib);
    }
    let mb = plan.stream_bytes;
    let label = if mb >= 64 << 20 { "64 MiB".to_string() } else { format!("{} MiB", mb >> 20) };
    eprintln!("  streaming");
    results.put(
        &format!("download {label} (64 KiB msgs)"),
        "MB/s",
        true,
        c,
        workloads::streaming(&client, mb, 65_536, true).await?,
    );
    results.put(
        &format!("upload {label} (64 KiB msgs)"),
        "MB/s",
        true,
        c,
        workloads::streaming(&client, mb, 65_536, false).await?,
    );
    eprintln!("  raft mix");
    results.put(
        "raft mix: 64×4 KiB in flight, heartbeat p99",
        "µs",
        false,
        c,
        workloads::raft_mix(&client, plan.time).await?,
    );
    drop(client);
    ep.close().await;
    drop(server);
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let cli = Cli::parse();
    if let Some(Cmd::Server { contender }) = cli.command {
        let addr = contenders::serve(contender).await;
        println!("READY {addr}");
        std::future::pending::<()>().await;
        return Ok(());
    }
    let plan = if cli.quick {
        Plan {
            payloads: [(64, "64 B", 50), (4096, "4 KiB", 50), (65_536, "64 KiB", 20), (1 << 20, "1 MiB", 5)],
            callers: [1, 16, 64],
            time: Duration::from_millis(150),
            stream_bytes: 4 << 20,
            setups: 3,
        }
    } else {
        Plan {
            payloads: [(64, "64 B", 5000), (4096, "4 KiB", 3000), (65_536, "64 KiB", 1000), (1 << 20, "1 MiB", 100)],
            callers: [1, 16, 64],
            time: Duration::from_secs(2),
            stream_bytes: 64 << 20,
            setups: 20,
        }
    };
    let contenders = if cli.contenders.is_empty() { Contender::ALL.to_vec() } else { cli.contenders.clone() };
    let mut results = Results::default();
    for c in &contenders {
        eprintln!("measuring {} …", c.label());
        measure(*c, &plan, &mut results).await?;
    }
    let table = results.markdown(&contenders);
    println!("{table}");
    std::fs::create_dir_all(&cli.out)?;
    std::fs::write(cli.out.join("results.md"), &table)?;
    results.svg(&contenders, &cli.out.join("results.svg"))?;
    eprintln!("wrote {} and {}", cli.out.join("results.md").display(), cli.out.join("results.svg").display());
    Ok(())
}

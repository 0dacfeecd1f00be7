//! `duet-load`'s output: the load table, and the soak curve as a table, CSV, markdown and SVG.

use std::fmt::Write as _;
use std::path::Path;

use plotters::prelude::*;

use crate::load::{Account, LoadResult, SoakPoint, SoakResult};

fn opt(v: Option<f64>) -> String {
    v.map_or("–".into(), |v| format!("{v:.1}"))
}

fn count(v: Option<u64>) -> String {
    v.map_or("–".into(), |v| v.to_string())
}

/// A row of the load table: its name and how to get its cell from a run.
type LoadRow = (&'static str, fn(&LoadResult) -> String);

/// A soak series: its name, unit and how to get it from a sample.
type Series = (&'static str, &'static str, fn(&SoakPoint) -> f64);

/// The load runs as one markdown table, a row per figure and a column per transport.
pub fn load_markdown(results: &[LoadResult]) -> String {
    let mut out = String::from("| figure |");
    for r in results {
        let _ = write!(out, " {} |", r.transport.label());
    }
    out.push_str("\n|---|");
    out.push_str(&"---:|".repeat(results.len()));
    out.push('\n');
    let rows: [LoadRow; 17] = [
        ("connections × calls in flight each", |r| format!("{} × {}", r.plan.connections, r.plan.in_flight)),
        ("server max_concurrent_calls_per_connection", |r| r.plan.server_limit.to_string()),
        ("most calls in flight at once (client)", |r| r.account.max_in_flight.to_string()),
        ("calls sent (unique ids)", |r| r.account.sent.to_string()),
        ("answered once with their own id", |r| r.account.ok.to_string()),
        ("ids with no answer", |r| count(r.account.missing)),
        ("ids answered more than once", |r| count(r.account.duplicated)),
        ("answers carrying another id", |r| r.account.wrong_id.to_string()),
        ("no answer within the watchdog", |r| r.account.no_answer.to_string()),
        ("status errors by code", |r| r.account.errors_line()),
        ("calls the server handled (its counter)", |r| count(r.account.server_handled)),
        ("exactly one answer per call", |r| if r.account.exactly_once() { "yes" } else { "**NO**" }.into()),
        ("wall time, s", |r| format!("{:.2}", r.elapsed.as_secs_f64())),
        ("throughput, calls/s", |r| format!("{:.0}", r.rate())),
        ("server peak RSS (VmHWM), MiB", |r| opt(r.server_peak_mib)),
        ("server RSS / open fds after the run", |r| {
            r.server_after.map_or("–".into(), |s| format!("{:.1} MiB / {}", s.rss_mib, s.fds))
        }),
        ("client peak RSS (VmHWM), MiB", |r| opt(r.client_peak_mib)),
    ];
    for (name, f) in rows {
        let _ = write!(out, "| {name} |");
        for r in results {
            let _ = write!(out, " {} |", f(r));
        }
        out.push('\n');
    }
    out
}

/// The first few failures of a run, for the report (empty if none).
pub fn failures(label: &str, account: &Account) -> String {
    let lines: String = account.first_errors.iter().map(|e| format!("- {label}: {e}\n")).collect();
    if lines.is_empty() { lines } else { format!("\nFirst failures:\n\n{lines}") }
}

/// Least-squares slope of `y` over `x`.
pub fn slope(points: &[(f64, f64)]) -> f64 {
    let n = points.len() as f64;
    if n < 2.0 {
        return 0.0;
    }
    let (mx, my) = (points.iter().map(|p| p.0).sum::<f64>() / n, points.iter().map(|p| p.1).sum::<f64>() / n);
    let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    if sxx == 0.0 { 0.0 } else { sxy / sxx }
}

/// One measured series of a soak (server or client RSS or fds) summed up.
#[derive(Debug, Clone)]
pub struct SeriesSummary {
    /// What it is.
    pub name: &'static str,
    /// Its unit.
    pub unit: &'static str,
    /// Before the first call.
    pub idle: f64,
    /// First sample under load.
    pub start: f64,
    /// The sample nearest the middle.
    pub middle: f64,
    /// Last sample under load.
    pub end: f64,
    /// Mean over the first window (a minute, or a third of a shorter run).
    pub first_avg: f64,
    /// Mean over the last window.
    pub last_avg: f64,
    /// Least-squares slope per minute over the samples after the first window.
    pub slope_per_min: f64,
    /// Least-squares slope per minute over every sample under load.
    pub slope_all_per_min: f64,
}

/// Summaries of the four series of a soak, and the window used for first/last averages, seconds.
pub fn soak_summary(r: &SoakResult) -> (Vec<SeriesSummary>, f64) {
    let load: Vec<&SoakPoint> = r.points.iter().filter(|p| p.t > 0.0).collect();
    let total = load.last().map_or(0.0, |p| p.t);
    let window = (total / 3.0).min(60.0);
    let series: [Series; 4] = [
        ("server RSS", "MiB", |p| p.server.rss_mib),
        ("server open fds", "fds", |p| p.server.fds as f64),
        ("client RSS", "MiB", |p| p.client.rss_mib),
        ("client open fds", "fds", |p| p.client.fds as f64),
    ];
    let mean = |v: Vec<f64>| if v.is_empty() { f64::NAN } else { v.iter().sum::<f64>() / v.len() as f64 };
    let summaries = series
        .into_iter()
        .map(|(name, unit, f)| {
            let at = |i: usize| load.get(i).map_or(f64::NAN, |p| f(p));
            let steady: Vec<(f64, f64)> = load.iter().filter(|p| p.t > window).map(|p| (p.t / 60.0, f(p))).collect();
            let all: Vec<(f64, f64)> = load.iter().map(|p| (p.t / 60.0, f(p))).collect();
            SeriesSummary {
                name,
                unit,
                idle: r.points.first().map_or(f64::NAN, f),
                start: at(0),
                middle: at(load.len() / 2),
                end: at(load.len().saturating_sub(1)),
                first_avg: mean(load.iter().filter(|p| p.t <= window).map(|p| f(p)).collect()),
                last_avg: mean(load.iter().filter(|p| p.t >= total - window).map(|p| f(p)).collect()),
                slope_per_min: slope(if steady.len() >= 2 { &steady } else { &all }),
                slope_all_per_min: slope(&all),
            }
        })
        .collect();
    (summaries, window)
}

/// The soak curve as a markdown table (one row per sample), with the summary above it.
pub fn soak_markdown(r: &SoakResult) -> String {
    let (summaries, window) = soak_summary(r);
    let mut out = format!(
        "### Soak, {}: {} connections × {} calls in flight, server limit {} per connection, {:.1} min\n\n",
        r.transport.label(),
        r.plan.connections,
        r.plan.in_flight,
        r.plan.server_limit,
        r.elapsed.as_secs_f64() / 60.0
    );
    let a = &r.account;
    let _ = writeln!(
        out,
        "Calls: {} sent, {} answered once with their own id, {} with another id, {} unanswered, status errors: {}; \
         server handled {}; exactly one answer per call: **{}**. Mean rate {:.0} calls/s.\n",
        a.sent,
        a.ok,
        a.wrong_id,
        a.no_answer,
        a.errors_line(),
        count(a.server_handled),
        if a.exactly_once() { "yes" } else { "NO" },
        a.ok as f64 / r.elapsed.as_secs_f64()
    );
    let _ = writeln!(
        out,
        "| series | idle (t=0) | start | middle | end | first {w:.0} s avg | last {w:.0} s avg | slope after first {w:.0} s | slope, all |",
        w = window
    );
    out.push_str("|---|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for s in &summaries {
        let _ = writeln!(
            out,
            "| {} ({}) | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:+.3}/min | {:+.3}/min |",
            s.name,
            s.unit,
            s.idle,
            s.start,
            s.middle,
            s.end,
            s.first_avg,
            s.last_avg,
            s.slope_per_min,
            s.slope_all_per_min
        );
    }
    out.push_str(
        "\n| t (s) | server RSS (MiB) | server fds | client RSS (MiB) | client fds | calls/s | answered | failed |\n",
    );
    out.push_str("|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    let row = |out: &mut String, label: String, p: &SoakPoint| {
        let _ = writeln!(
            out,
            "| {label} | {:.1} | {} | {:.1} | {} | {:.0} | {} | {} |",
            p.server.rss_mib, p.server.fds, p.client.rss_mib, p.client.fds, p.rate, p.answered, p.failed
        );
    };
    for p in &r.points {
        row(&mut out, format!("{:.0}", p.t), p);
    }
    if let Some(p) = &r.after {
        row(&mut out, format!("{:.0} (stopped)", p.t), p);
    }
    out
}

/// The soak curve as CSV; the sample after the load stopped has `phase` = `stopped`.
pub fn soak_csv(r: &SoakResult) -> String {
    let mut out = String::from(
        "transport,phase,t_s,server_rss_mib,server_fds,client_rss_mib,client_fds,calls_per_s,answered,failed\n",
    );
    let points = r.points.iter().map(|p| ("load", p)).chain(r.after.iter().map(|p| ("stopped", p)));
    for (phase, p) in points {
        let _ = writeln!(
            out,
            "{},{phase},{:.1},{:.2},{},{:.2},{},{:.0},{},{}",
            r.transport.name(),
            p.t,
            p.server.rss_mib,
            p.server.fds,
            p.client.rss_mib,
            p.client.fds,
            p.rate,
            p.answered,
            p.failed
        );
    }
    out
}

/// Two line charts side by side: RSS (server, client) and open fds (server, client) over minutes.
pub fn soak_svg(r: &SoakResult, path: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let root = SVGBackend::new(path, (1200, 420)).into_drawing_area();
    root.fill(&WHITE)?;
    let areas = root.split_evenly((1, 2));
    let end = r.points.last().map_or(1.0, |p| p.t / 60.0).max(1.0 / 60.0);
    type Get = fn(&SoakPoint) -> f64;
    let panels: [(&str, [(&str, Get); 2]); 2] = [
        ("resident memory (MiB)", [("server", |p| p.server.rss_mib), ("client", |p| p.client.rss_mib)]),
        ("open file descriptors", [("server", |p| p.server.fds as f64), ("client", |p| p.client.fds as f64)]),
    ];
    for (area, (title, lines)) in areas.iter().zip(panels) {
        let max = r.points.iter().flat_map(|p| lines.map(|(_, f)| f(p))).fold(1.0, f64::max) * 1.15;
        let mut chart = ChartBuilder::on(area)
            .caption(format!("{}: {title}", r.transport.label()), ("sans-serif", 16))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(0f64..end, 0f64..max)?;
        chart.configure_mesh().x_desc("minutes under load").draw()?;
        for (i, (name, f)) in lines.into_iter().enumerate() {
            let color = Palette99::pick(i).stroke_width(2);
            chart
                .draw_series(std::iter::once(PathElement::new(
                    r.points.iter().map(|p| (p.t / 60.0, f(p))).collect::<Vec<_>>(),
                    color,
                )))?
                .label(name)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], Palette99::pick(i).stroke_width(2)));
        }
        chart.configure_series_labels().background_style(WHITE.mix(0.8)).border_style(BLACK).draw()?;
    }
    root.present()?;
    Ok(())
}

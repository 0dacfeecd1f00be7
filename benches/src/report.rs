//! The results table (markdown, with ratios) and the chart (SVG).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use plotters::prelude::*;

use crate::contenders::Contender;

/// One measured row: its name, unit, and whether more is better.
#[derive(Debug, Clone)]
pub struct Row {
    /// What was measured.
    pub name: String,
    /// Its unit.
    pub unit: &'static str,
    /// True for rates, false for times and sizes.
    pub higher_is_better: bool,
    /// The value per contender.
    pub values: BTreeMap<Contender, f64>,
}

/// All rows, in the order measured.
#[derive(Debug, Default)]
pub struct Results {
    rows: Vec<Row>,
}

impl Results {
    /// Records one value.
    pub fn put(&mut self, name: &str, unit: &'static str, higher_is_better: bool, c: Contender, value: f64) {
        match self.rows.iter_mut().find(|r| r.name == name) {
            Some(row) => {
                row.values.insert(c, value);
            }
            None => {
                self.rows.push(Row { name: name.into(), unit, higher_is_better, values: BTreeMap::from([(c, value)]) })
            }
        }
    }

    fn value(&self, name: &str, c: Contender) -> Option<f64> {
        self.rows.iter().find(|r| r.name == name)?.values.get(&c).copied()
    }

    /// A markdown table: each cell is the value, then its ratio to tonic over TCP and to the raw
    /// ceiling (for rates, contender ÷ reference; for times and sizes, reference ÷ contender, so > 1
    /// always means better than the reference).
    pub fn markdown(&self, contenders: &[Contender]) -> String {
        let mut out = table_head(contenders);
        for row in &self.rows {
            let _ = write!(out, "| {} | {} |", row.name, row.unit);
            for c in contenders {
                let Some(v) = row.values.get(c) else {
                    out.push_str(" – |");
                    continue;
                };
                let ratio = |reference: Option<&f64>| {
                    reference
                        .filter(|r| **r > 0.0 && *v > 0.0)
                        .map(|r| if row.higher_is_better { v / r } else { r / v })
                };
                let fmt = |r: Option<f64>| r.map_or("–".to_string(), |r| format!("{r:.2}×"));
                let _ = write!(
                    out,
                    " {} <sub>{} tonic, {} raw</sub> |",
                    human(*v),
                    fmt(ratio(row.values.get(&Contender::TonicTcp))),
                    fmt(ratio(row.values.get(&Contender::RawIroh)))
                );
            }
            out.push('\n');
        }
        out
    }

    /// A bar chart of the headline rates per contender.
    pub fn svg(&self, contenders: &[Contender], path: &Path) -> Result<(), Box<dyn std::error::Error>> {
        let panels = ["unary 64 B, 64 callers", "download 64 MiB (64 KiB msgs)", "upload 64 MiB (64 KiB msgs)"];
        let root = SVGBackend::new(path, (1200, 420)).into_drawing_area();
        root.fill(&WHITE)?;
        let areas = root.split_evenly((1, panels.len()));
        for (area, panel) in areas.iter().zip(panels) {
            let Some(row) = self.rows.iter().find(|r| r.name.starts_with(panel)) else { continue };
            let values: Vec<(usize, f64)> =
                contenders.iter().enumerate().filter_map(|(i, c)| self.value(&row.name, *c).map(|v| (i, v))).collect();
            let max = values.iter().map(|(_, v)| *v).fold(1.0, f64::max) * 1.15;
            let mut chart = ChartBuilder::on(area)
                .caption(format!("{} ({})", row.name, row.unit), ("sans-serif", 16))
                .margin(12)
                .x_label_area_size(60)
                .y_label_area_size(60)
                .build_cartesian_2d(0f64..contenders.len() as f64, 0f64..max)?;
            let labels: Vec<&str> = contenders.iter().map(|c| c.label()).collect();
            chart
                .configure_mesh()
                .disable_x_mesh()
                .x_labels(contenders.len() * 2)
                .x_label_formatter(&|x| {
                    let i = x.floor() as usize;
                    if (x - i as f64 - 0.5).abs() < 0.26 {
                        labels.get(i).copied().unwrap_or("").to_string()
                    } else {
                        String::new()
                    }
                })
                .draw()?;
            chart.draw_series(values.iter().map(|(i, v)| {
                let color = Palette99::pick(*i).filled();
                Rectangle::new([(*i as f64 + 0.15, 0.0), (*i as f64 + 0.85, *v)], color)
            }))?;
        }
        root.present()?;
        Ok(())
    }
}

/// The head of a table with one column per contender: its title row and alignment row.
pub fn table_head(contenders: &[Contender]) -> String {
    let mut out = String::from("| workload | unit |");
    for c in contenders {
        let _ = write!(out, " {} |", c.label());
    }
    out.push_str("\n|---|---|");
    out.push_str(&"---:|".repeat(contenders.len()));
    out.push('\n');
    out
}

fn human(v: f64) -> String {
    if v >= 100_000.0 {
        format!("{:.0}k", v / 1000.0)
    } else if v >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

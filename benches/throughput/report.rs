//! Output of the throughput benchmark: lines, a Markdown table, a CSV file
//! and an SVG bar chart.

use std::fmt::Write as _;

/// One measured case.
pub(crate) struct Row {
    pub(crate) case: &'static str,
    pub(crate) baseline: &'static str,
    pub(crate) size: usize,
    pub(crate) records: usize,
    pub(crate) rate: f64,
    /// The baseline's median over the runs interleaved with this case's.
    pub(crate) base_rate: Option<f64>,
    /// How far the process's RSS rose above its level at the case's start.
    pub(crate) rss_growth_mb: Option<f64>,
}

impl Row {
    pub(crate) fn new(
        case: &'static str,
        baseline: &'static str,
        size: usize,
        records: usize,
        rate: f64,
        base_rate: f64,
        rss_growth_mb: Option<f64>,
    ) -> Self {
        Row {
            case,
            baseline,
            size,
            records,
            rate,
            base_rate: Some(base_rate),
            rss_growth_mb,
        }
    }

    fn ratio(&self) -> Option<f64> {
        self.base_rate.map(|b| self.rate / b)
    }

    fn mb_per_s(&self) -> f64 {
        self.rate * self.size as f64 / 1e6
    }

    pub(crate) fn line(&self) -> String {
        let mut s = format!(
            "case={} size={} records={} records_per_s={:.0} mb_per_s={:.1}",
            self.case,
            self.size,
            self.records,
            self.rate,
            self.mb_per_s()
        );
        if let (Some(r), Some(b)) = (self.ratio(), self.base_rate) {
            let _ = write!(
                s,
                " ratio_vs_raw={r:.2} baseline={} baseline_records_per_s={b:.0}",
                self.baseline
            );
        }
        if let Some(m) = self.rss_growth_mb {
            let _ = write!(s, " rss_growth_mb={m:.0}");
        }
        s
    }
}

pub(crate) fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

pub(crate) fn markdown(rows: &[Row]) -> String {
    let mut s = String::from(
        "| case | record size | records/s | MB/s | baseline (same runs) | baseline records/s | ratio vs raw | RSS growth MB |\n|---|---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        let _ = writeln!(
            s,
            "| {} | {} B | {:.0} | {:.1} | {} | {} | {} | {} |",
            r.case,
            r.size,
            r.rate,
            r.mb_per_s(),
            if r.base_rate.is_some() {
                r.baseline
            } else {
                "-"
            },
            r.base_rate.map_or("-".to_owned(), |x| format!("{x:.0}")),
            r.ratio().map_or("-".to_owned(), |x| format!("{x:.2}")),
            r.rss_growth_mb
                .map_or("-".to_owned(), |m| format!("{m:.0}")),
        );
    }
    s
}

/// Writes `throughput.csv` and `throughput.svg` under the target folder and
/// returns the folder.
pub(crate) fn write_files(rows: &[Row]) -> std::io::Result<String> {
    let target = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".to_owned());
    let dir = format!("{target}/bench-results");
    std::fs::create_dir_all(&dir)?;
    let mut csv = String::from(
        "case,size,records,records_per_s,mb_per_s,baseline,baseline_records_per_s,ratio_vs_raw,rss_growth_mb\n",
    );
    for r in rows {
        let _ = writeln!(
            csv,
            "{},{},{},{:.0},{:.2},{},{},{},{}",
            r.case,
            r.size,
            r.records,
            r.rate,
            r.mb_per_s(),
            if r.base_rate.is_some() {
                r.baseline
            } else {
                ""
            },
            r.base_rate.map_or(String::new(), |x| format!("{x:.0}")),
            r.ratio().map_or(String::new(), |x| format!("{x:.3}")),
            r.rss_growth_mb.map_or(String::new(), |m| format!("{m:.1}")),
        );
    }
    std::fs::write(format!("{dir}/throughput.csv"), csv)?;
    std::fs::write(format!("{dir}/throughput.svg"), svg(rows))?;
    Ok(dir)
}

/// A horizontal bar chart of records/s, raw baselines in grey.
fn svg(rows: &[Row]) -> String {
    let bar_h = 22;
    let label_w = 540;
    let chart_w = 520;
    let top = 40;
    let height = top + rows.len() * (bar_h + 8) + 30;
    let max = rows.iter().map(|r| r.rate).fold(1.0, f64::max);
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{height}\" font-family=\"sans-serif\" font-size=\"13\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"10\" y=\"24\" font-size=\"16\" font-weight=\"bold\">reactive-kafka throughput (records/s, higher is better)</text>\n",
        label_w + chart_w + 140
    );
    for (i, r) in rows.iter().enumerate() {
        let y = top + i * (bar_h + 8);
        let w = (r.rate / max * chart_w as f64).max(1.0);
        let raw = r.case.starts_with("raw_");
        let color = if raw { "#9e9e9e" } else { "#1f77b4" };
        let ratio = r
            .ratio()
            .filter(|_| !raw)
            .map_or(String::new(), |x| format!(" ({x:.2}x raw)"));
        let _ = writeln!(
            s,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{} ({} B)</text>\
             <rect x=\"{}\" y=\"{y}\" width=\"{w:.0}\" height=\"{bar_h}\" fill=\"{color}\"/>\
             <text x=\"{}\" y=\"{}\">{:.0}{ratio}</text>",
            label_w - 8,
            y + 16,
            r.case,
            r.size,
            label_w,
            label_w as f64 + w + 6.0,
            y + 16,
            r.rate,
        );
    }
    s.push_str("</svg>\n");
    s
}

//! Output of the throughput benchmark: lines, a Markdown table, the goals,
//! a CSV file and an SVG bar chart.

use std::fmt::Write as _;

/// The groups of a measured process's threads whose CPU time is reported
/// per record: the thread that runs the case (the process's first: a crate
/// case's pipeline), the consumer's own thread (`reactive-kafka-consumer-N`),
/// librdkafka's threads (`rdk:*`), tokio's (spawned tasks such as a
/// committer's, and the blocking threads a raw loop polls on), and the rest
/// (a producer's polling thread, the benchmark's sampler).
pub(crate) const THREAD_GROUPS: [&str; 5] = ["main", "consumer", "librdkafka", "tokio", "other"];

/// The median of a case's runs, with the slowest and fastest run.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Stats {
    pub(crate) median: f64,
    pub(crate) min: f64,
    pub(crate) max: f64,
}

impl Stats {
    pub(crate) fn of(mut v: Vec<f64>) -> Stats {
        v.sort_by(f64::total_cmp);
        Stats {
            median: v[v.len() / 2],
            min: v[0],
            max: v[v.len() - 1],
        }
    }

    /// The spread, max over min, as a percentage above 1.
    fn spread_pct(&self) -> f64 {
        if self.min > 0.0 {
            (self.max / self.min - 1.0) * 100.0
        } else {
            0.0
        }
    }
}

/// What a case is compared with: the baseline's figures over the same rounds.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Base {
    pub(crate) case: &'static str,
    pub(crate) first: Stats,
    pub(crate) second: Stats,
    pub(crate) rss_mb: f64,
    /// CPU ns per record in the second pass, where measured.
    pub(crate) cpu_ns: Option<Stats>,
    /// The whole machine's busy CPU ns per record in the second pass.
    pub(crate) machine_ns: Option<Stats>,
}

/// One measured case.
#[derive(Clone, Debug)]
pub(crate) struct Row {
    pub(crate) case: &'static str,
    pub(crate) size: usize,
    pub(crate) partitions: i32,
    pub(crate) records: usize,
    /// The first pass of each run (a new process: cold caches, cold allocator).
    pub(crate) first: Stats,
    /// The second pass of each run, in the same process.
    pub(crate) second: Stats,
    /// The median over the runs of each process's peak RSS.
    pub(crate) rss_mb: Option<f64>,
    /// The medians over the runs of each process's heap in use before its
    /// first pass and at its peak (glibc's count), in MB.
    pub(crate) heap_mb: Option<(f64, f64)>,
    /// The process's CPU time per record (ns, all threads) in the first and
    /// the second pass, where measured (not for the Java tools).
    pub(crate) cpu_ns: Option<(Stats, Stats)>,
    /// The whole machine's busy CPU time per record (ns, every process: the
    /// broker's too when it runs on this machine) in each pass.
    pub(crate) machine_ns: Option<(Stats, Stats)>,
    /// The second pass's CPU time per record of each group of threads
    /// ([`THREAD_GROUPS`]), medians over the runs, in ns.
    pub(crate) threads_ns: Option<[f64; THREAD_GROUPS.len()]>,
    /// The second pass's minor page faults per 1,000 records of each group
    /// of threads, medians over the runs.
    pub(crate) threads_faults: Option<[f64; THREAD_GROUPS.len()]>,
    pub(crate) base: Option<Base>,
}

impl Row {
    /// Second pass over the baseline's second pass.
    pub(crate) fn ratio(&self) -> Option<f64> {
        self.base.map(|b| self.second.median / b.second.median)
    }

    /// First pass over the baseline's first pass.
    pub(crate) fn first_ratio(&self) -> Option<f64> {
        self.base.map(|b| self.first.median / b.first.median)
    }

    /// Peak RSS over the baseline's.
    pub(crate) fn rss_ratio(&self) -> Option<f64> {
        match (self.rss_mb, self.base) {
            (Some(m), Some(b)) if b.rss_mb > 0.0 => Some(m / b.rss_mb),
            _ => None,
        }
    }

    /// Second-pass CPU per record over the baseline's (lower is better).
    pub(crate) fn cpu_ratio(&self) -> Option<f64> {
        second_over(self.cpu_ns, self.base?.cpu_ns)
    }

    /// Second-pass machine CPU per record over the baseline's.
    pub(crate) fn machine_ratio(&self) -> Option<f64> {
        second_over(self.machine_ns, self.base?.machine_ns)
    }

    fn is_baseline(&self) -> bool {
        self.base.is_some_and(|b| b.case == self.case)
    }

    pub(crate) fn line(&self) -> String {
        let mut s = format!(
            "case={} size={} partitions={} records={} first_pass={:.0} second_pass={:.0} spread_pct={:.0} mb_per_s={:.1}",
            self.case,
            self.size,
            self.partitions,
            self.records,
            self.first.median,
            self.second.median,
            self.second.spread_pct().max(self.first.spread_pct()),
            self.second.median * self.size as f64 / 1e6,
        );
        if let Some(m) = self.rss_mb {
            let _ = write!(s, " peak_rss_mb={m:.0}");
        }
        if let Some((_, h)) = self.heap_mb {
            let _ = write!(s, " peak_heap_mb={h:.0}");
        }
        if let Some((a, b)) = self.cpu_ns {
            let _ = write!(
                s,
                " cpu_ns_per_record={:.0}/{:.0} cpu_spread_pct={:.0}",
                a.median,
                b.median,
                b.spread_pct()
            );
        }
        if let Some((_, m)) = self.machine_ns {
            let _ = write!(s, " machine_cpu_ns_per_record={:.0}", m.median);
        }
        let groups = |figures: [f64; THREAD_GROUPS.len()], digits: usize| {
            let groups: Vec<String> = THREAD_GROUPS
                .iter()
                .zip(figures)
                .map(|(name, f)| format!("{name}:{f:.digits$}"))
                .collect();
            groups.join(",")
        };
        if let Some(ns) = self.threads_ns {
            let _ = write!(s, " threads_ns_per_record={}", groups(ns, 0));
        }
        if let Some(faults) = self.threads_faults {
            let _ = write!(s, " threads_faults_per_krecord={}", groups(faults, 1));
        }
        if let (Some(b), false) = (self.base, self.is_baseline()) {
            let _ = write!(
                s,
                " baseline={} ratio_first={:.2} ratio_second={:.2} baseline_peak_rss_mb={:.0}",
                b.case,
                self.first_ratio().unwrap_or(0.0),
                self.ratio().unwrap_or(0.0),
                b.rss_mb,
            );
            if let Some(r) = self.rss_ratio() {
                let _ = write!(s, " rss_ratio={r:.2}");
            }
            if let Some(r) = self.cpu_ratio() {
                let _ = write!(s, " cpu_ratio_second={r:.2}");
            }
            if let Some(r) = self.machine_ratio() {
                let _ = write!(s, " machine_cpu_ratio_second={r:.2}");
            }
        }
        s
    }
}

/// A case's second-pass median over its baseline's, where both exist.
fn second_over(ours: Option<(Stats, Stats)>, base: Option<Stats>) -> Option<f64> {
    let (ours, base) = (ours?.1.median, base?.median);
    (base > 0.0).then(|| ours / base)
}

fn rate(x: f64) -> String {
    // Thousands separators keep the table readable.
    let n = x.round() as u64;
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

pub(crate) fn markdown(rows: &[Row]) -> String {
    let mut s = String::from(
        "| case | size | partitions | 1st pass records/s | 2nd pass records/s | spread | baseline | ratio 1st / 2nd | CPU ns/record, 2nd (ratio) | machine CPU ns/record, 2nd (ratio) | peak RSS MB (baseline) |\n|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        let base = match r.base {
            Some(b) if !r.is_baseline() => b.case,
            _ => "-",
        };
        let ratios = match (r.first_ratio(), r.ratio()) {
            (Some(a), Some(b)) if !r.is_baseline() => format!("{a:.2} / {b:.2}"),
            _ => "-".to_owned(),
        };
        let rss = match (r.rss_mb, r.base) {
            (Some(m), Some(b)) if !r.is_baseline() => format!("{m:.0} ({:.0})", b.rss_mb),
            (Some(m), _) => format!("{m:.0}"),
            _ => "-".to_owned(),
        };
        let with_ratio = |ns: Option<(Stats, Stats)>, ratio: Option<f64>| match (ns, ratio) {
            (Some((_, c)), Some(x)) if !r.is_baseline() => format!("{:.0} ({x:.2})", c.median),
            (Some((_, c)), _) => format!("{:.0}", c.median),
            _ => "-".to_owned(),
        };
        let cpu = with_ratio(r.cpu_ns, r.cpu_ratio());
        let machine = with_ratio(r.machine_ns, r.machine_ratio());
        let _ = writeln!(
            s,
            "| {} | {} B | {} | {} | {} | {:.0}% | {} | {} | {} | {} | {} |",
            r.case,
            r.size,
            r.partitions,
            rate(r.first.median),
            rate(r.second.median),
            r.first.spread_pct().max(r.second.spread_pct()),
            base,
            ratios,
            cpu,
            machine,
            rss,
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
        "case,size,partitions,records,first_pass,first_min,first_max,second_pass,second_min,second_max,cpu_ns_first,cpu_ns_second,machine_cpu_ns_second,peak_rss_mb,baseline,ratio_first,ratio_second,cpu_ratio_second,machine_cpu_ratio_second,baseline_peak_rss_mb,main_ns_second,consumer_ns_second,librdkafka_ns_second,tokio_ns_second,other_ns_second,main_faults_per_krecord,consumer_faults_per_krecord,librdkafka_faults_per_krecord,tokio_faults_per_krecord,other_faults_per_krecord\n",
    );
    for r in rows {
        let opt = |x: Option<f64>| x.map_or(String::new(), |x| format!("{x:.3}"));
        let groups = |figures: Option<[f64; THREAD_GROUPS.len()]>| {
            (0..THREAD_GROUPS.len())
                .map(|g| opt(figures.map(|t| t[g])))
                .collect::<Vec<_>>()
                .join(",")
        };
        let _ = writeln!(
            csv,
            "{},{},{},{},{:.0},{:.0},{:.0},{:.0},{:.0},{:.0},{},{},{},{},{},{},{},{},{},{},{},{}",
            r.case,
            r.size,
            r.partitions,
            r.records,
            r.first.median,
            r.first.min,
            r.first.max,
            r.second.median,
            r.second.min,
            r.second.max,
            opt(r.cpu_ns.map(|c| c.0.median)),
            opt(r.cpu_ns.map(|c| c.1.median)),
            opt(r.machine_ns.map(|m| m.1.median)),
            opt(r.rss_mb),
            r.base.map_or("", |b| b.case),
            opt(r.first_ratio()),
            opt(r.ratio()),
            opt(r.cpu_ratio()),
            opt(r.machine_ratio()),
            opt(r.base.map(|b| b.rss_mb)),
            groups(r.threads_ns),
            groups(r.threads_faults),
        );
    }
    std::fs::write(format!("{dir}/throughput.csv"), csv)?;
    std::fs::write(format!("{dir}/throughput.svg"), svg(rows))?;
    Ok(dir)
}

/// A horizontal bar chart of second-pass records/s, baselines in grey.
fn svg(rows: &[Row]) -> String {
    let bar_h = 22;
    let label_w = 560;
    let chart_w = 520;
    let top = 40;
    let height = top + rows.len() * (bar_h + 8) + 30;
    let max = rows.iter().map(|r| r.second.median).fold(1.0, f64::max);
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{height}\" font-family=\"sans-serif\" font-size=\"13\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"10\" y=\"24\" font-size=\"16\" font-weight=\"bold\">reactive-kafka throughput (records/s, second pass, higher is better)</text>\n",
        label_w + chart_w + 160
    );
    for (i, r) in rows.iter().enumerate() {
        let y = top + i * (bar_h + 8);
        let w = (r.second.median / max * chart_w as f64).max(1.0);
        let other = r.case.starts_with("raw_") || r.case.starts_with("java_");
        let color = if other { "#9e9e9e" } else { "#1f77b4" };
        let ratio = match (r.ratio(), r.base) {
            (Some(x), Some(b)) if !r.is_baseline() => format!(" ({x:.2}x {})", b.case),
            _ => String::new(),
        };
        let _ = writeln!(
            s,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{} ({} B, {}p)</text>\
             <rect x=\"{}\" y=\"{y}\" width=\"{w:.0}\" height=\"{bar_h}\" fill=\"{color}\"/>\
             <text x=\"{}\" y=\"{}\">{}{ratio}</text>",
            label_w - 8,
            y + 16,
            r.case,
            r.size,
            r.partitions,
            label_w,
            label_w as f64 + w + 6.0,
            y + 16,
            rate(r.second.median),
        );
    }
    s.push_str("</svg>\n");
    s
}

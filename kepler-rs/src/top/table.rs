//! The numbers behind `kepler-rs top`: power per container, pod or process from two scrapes of
//! Kepler's classic counters (`kepler_container_joules_total`, `kepler_process_joules_total`,
//! and the GPU part of them, `kepler_container_gpu_joules_total`,
//! `kepler_process_gpu_joules_total`).
//!
//! Power is the counter increase between the scrapes divided by the time between them, summed
//! over `mode` (dynamic + idle, shown separately too); GPU power, all modes, is shown on its
//! own as well (it is part of the total, as in Kepler). A series that went backwards (exporter
//! restart) shows no power rather than a negative one. Pure functions: the terminal code only
//! draws what [`build`] returns.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use crate::config::top::{Group, SortBy};

/// Energy counters from one scrape, keyed by row identity then mode.
pub type Counters = BTreeMap<RowKey, BTreeMap<String, f64>>;

/// What one row stands for.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RowKey {
    pub namespace: String,
    pub pod: String,
    pub name: String,
    pub id: String,
}

/// The key of [`Counters`] under which a row's GPU energy (every mode) is kept.
pub const GPU: &str = "gpu";

/// Extracts the energy counters of one grouping from a parsed scrape.
pub fn counters(scrape: &prometheus_parse::Scrape, group: Group) -> Counters {
    let (metric, gpu_metric) = match group {
        Group::Process => (
            "kepler_process_joules_total",
            "kepler_process_gpu_joules_total",
        ),
        Group::Container | Group::Pod => (
            "kepler_container_joules_total",
            "kepler_container_gpu_joules_total",
        ),
    };
    let mut out = Counters::new();
    for sample in scrape
        .samples
        .iter()
        .filter(|s| s.metric == metric || s.metric == gpu_metric)
    {
        let value = match sample.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Untyped(v)
            | prometheus_parse::Value::Gauge(v) => v,
            _ => continue,
        };
        if !value.is_finite() {
            continue;
        }
        let l = |k: &str| sample.labels.get(k).unwrap_or_default().to_string();
        let key = match group {
            Group::Container => RowKey {
                namespace: l("container_namespace"),
                pod: l("pod_name"),
                name: l("container_name"),
                id: l("container_id"),
            },
            Group::Pod => RowKey {
                namespace: l("container_namespace"),
                pod: l("pod_name"),
                name: String::new(),
                id: String::new(),
            },
            Group::Process => RowKey {
                namespace: String::new(),
                pod: String::new(),
                name: l("command"),
                id: l("pid"),
            },
        };
        let mode = if sample.metric == gpu_metric {
            GPU.to_string()
        } else {
            l("mode")
        };
        *out.entry(key).or_default().entry(mode).or_insert(0.0) += value;
    }
    out
}

/// When the exporter took the snapshot a scrape shows (`kepler_exporter_snapshot_timestamp_seconds`).
/// Rates must use these times, not the scrape times: a scrape between two snapshots shows the
/// older one, so wall-clock time between scrapes would alias.
pub fn snapshot_time(scrape: &prometheus_parse::Scrape) -> Option<f64> {
    scrape
        .samples
        .iter()
        .find(|s| s.metric == "kepler_exporter_snapshot_timestamp_seconds")
        .and_then(|s| match s.value {
            prometheus_parse::Value::Gauge(v) | prometheus_parse::Value::Untyped(v)
                if v.is_finite() && v > 0.0 =>
            {
                Some(v)
            }
            _ => None,
        })
}

/// Whether `after` shows a later measurement than `before` (true where an exporter does not say
/// when it measured, as Kepler does not).
pub fn shows_newer_snapshot(
    before: &prometheus_parse::Scrape,
    after: &prometheus_parse::Scrape,
) -> bool {
    match (snapshot_time(before), snapshot_time(after)) {
        (Some(t0), Some(t1)) => t1 > t0,
        _ => true,
    }
}

/// Time between the snapshots two scrapes show, else `fallback` (the time between the scrapes).
pub fn elapsed_between(
    before: &prometheus_parse::Scrape,
    after: &prometheus_parse::Scrape,
    fallback: Duration,
) -> Duration {
    match (snapshot_time(before), snapshot_time(after)) {
        (Some(t0), Some(t1)) if t1 >= t0 => Duration::from_secs_f64(t1 - t0),
        _ => fallback,
    }
}

/// One line of the table.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub key: RowKey,
    pub dynamic_watts: f64,
    pub idle_watts: f64,
    /// The GPU's part of [`Row::watts`].
    pub gpu_watts: f64,
    pub joules: f64,
}

impl Row {
    pub fn watts(&self) -> f64 {
        self.dynamic_watts + self.idle_watts
    }
}

/// Rows from two scrapes `elapsed` apart, sorted.
pub fn build(before: &Counters, after: &Counters, elapsed: Duration, sort: SortBy) -> Vec<Row> {
    let secs = elapsed.as_secs_f64();
    let rate = |key: &RowKey, mode: &str, now: f64| -> f64 {
        let then = before.get(key).and_then(|m| m.get(mode)).copied();
        match then {
            Some(then) if secs > 0.0 && now >= then => (now - then) / secs,
            _ => 0.0,
        }
    };
    let mut rows: Vec<Row> = after
        .iter()
        .map(|(key, modes)| Row {
            key: key.clone(),
            dynamic_watts: modes
                .get("dynamic")
                .map_or(0.0, |v| rate(key, "dynamic", *v)),
            idle_watts: modes.get("idle").map_or(0.0, |v| rate(key, "idle", *v)),
            gpu_watts: modes.get(GPU).map_or(0.0, |v| rate(key, GPU, *v)),
            joules: modes
                .iter()
                .filter(|(mode, _)| *mode != GPU)
                .map(|(_, v)| v)
                .sum(),
        })
        .collect();
    match sort {
        SortBy::Power => {
            rows.sort_by(|a, b| b.watts().total_cmp(&a.watts()).then(a.key.cmp(&b.key)))
        }
        SortBy::Energy => {
            rows.sort_by(|a, b| b.joules.total_cmp(&a.joules).then(a.key.cmp(&b.key)))
        }
        SortBy::Name => rows.sort_by(|a, b| a.key.cmp(&b.key)),
    }
    rows
}

/// Renders the table as plain text, at most `max_rows` rows, lines cut to `width` columns.
pub fn render(
    rows: &[Row],
    source: &str,
    group: Group,
    sort: SortBy,
    width: usize,
    max_rows: usize,
) -> String {
    let total: f64 = rows.iter().map(Row::watts).sum();
    let gpu: f64 = rows.iter().map(|r| r.gpu_watts).sum();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "kepler-rs top  {source}  total {total:.2} W  gpu {gpu:.2} W  group: {}  sort: {}  (keys: p power, e energy, n name, g group, q quit)",
        group.as_str(),
        sort.as_str()
    );
    let (name_col, id_col) = match group {
        Group::Process => ("COMMAND", "PID"),
        _ => ("CONTAINER", "CONTAINER ID"),
    };
    let _ = writeln!(
        out,
        "{:>9} {:>9} {:>9} {:>9} {:>12}  {:<16} {:<28} {:<20} {}",
        "POWER(W)",
        "DYN(W)",
        "IDLE(W)",
        "GPU(W)",
        "ENERGY(J)",
        "NAMESPACE",
        "POD",
        name_col,
        id_col
    );
    for row in rows.iter().take(max_rows) {
        let id: String = row.key.id.chars().take(12).collect();
        let _ = writeln!(
            out,
            "{:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>12.1}  {:<16} {:<28} {:<20} {}",
            row.watts(),
            row.dynamic_watts,
            row.idle_watts,
            row.gpu_watts,
            row.joules,
            cut(&row.key.namespace, 16),
            cut(&row.key.pod, 28),
            cut(&row.key.name, 20),
            id
        );
    }
    out.lines()
        .map(|l| l.chars().take(width.max(20)).collect::<String>())
        .collect::<Vec<_>>()
        .join("\n")
}

fn cut(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let mut c: String = s.chars().take(n.saturating_sub(1)).collect();
        c.push('~');
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scrape(text: &str) -> prometheus_parse::Scrape {
        prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).unwrap()
    }

    const BEFORE: &str = "# TYPE kepler_container_joules_total counter
kepler_container_joules_total{container_id=\"aaaa\",pod_name=\"web-1\",container_name=\"nginx\",container_namespace=\"shop\",mode=\"dynamic\",source=\"fake-rapl\"} 100
kepler_container_joules_total{container_id=\"aaaa\",pod_name=\"web-1\",container_name=\"nginx\",container_namespace=\"shop\",mode=\"idle\",source=\"fake-rapl\"} 50
kepler_container_joules_total{container_id=\"bbbb\",pod_name=\"web-1\",container_name=\"sidecar\",container_namespace=\"shop\",mode=\"dynamic\",source=\"fake-rapl\"} 10
kepler_container_joules_total{container_id=\"bbbb\",pod_name=\"web-1\",container_name=\"sidecar\",container_namespace=\"shop\",mode=\"idle\",source=\"fake-rapl\"} 5
kepler_container_joules_total{container_id=\"system_processes\",pod_name=\"system_processes\",container_name=\"system_processes\",container_namespace=\"system\",mode=\"dynamic\",source=\"fake-rapl\"} 40
kepler_container_joules_total{container_id=\"system_processes\",pod_name=\"system_processes\",container_name=\"system_processes\",container_namespace=\"system\",mode=\"idle\",source=\"fake-rapl\"} 400
";

    fn after() -> String {
        BEFORE
            .replace("} 100", "} 130")
            .replace("} 50\n", "} 56\n")
            .replace("} 10\n", "} 13\n")
            .replace("} 40\n", "} 10\n") // went backwards: exporter restarted
    }

    #[test]
    fn power_is_rate_per_container_and_sorted() {
        let b = counters(&scrape(BEFORE), Group::Container);
        let a = counters(&scrape(&after()), Group::Container);
        let rows = build(&b, &a, Duration::from_secs(3), SortBy::Power);
        assert_eq!(rows[0].key.name, "nginx");
        assert!(
            (rows[0].dynamic_watts - 10.0).abs() < 1e-9 && (rows[0].idle_watts - 2.0).abs() < 1e-9
        );
        assert_eq!(rows[1].key.name, "sidecar");
        let system = rows
            .iter()
            .find(|r| r.key.id == "system_processes")
            .unwrap();
        assert_eq!(
            system.dynamic_watts, 0.0,
            "a counter that went backwards shows no power"
        );
        let by_name = build(&b, &a, Duration::from_secs(3), SortBy::Name);
        assert_eq!(by_name[0].key.namespace, "shop");
        let by_energy = build(&b, &a, Duration::from_secs(3), SortBy::Energy);
        assert_eq!(by_energy[0].key.id, "system_processes");
    }

    #[test]
    fn gpu_power_is_its_own_column_and_part_of_the_total() {
        let gpu = |dynamic: u32, idle: u32| {
            format!(
                "# TYPE kepler_container_gpu_joules_total counter
kepler_container_gpu_joules_total{{container_id=\"aaaa\",pod_name=\"web-1\",container_name=\"nginx\",container_namespace=\"shop\",mode=\"dynamic\",source=\"NVML\"}} {dynamic}
kepler_container_gpu_joules_total{{container_id=\"aaaa\",pod_name=\"web-1\",container_name=\"nginx\",container_namespace=\"shop\",mode=\"idle\",source=\"NVML\"}} {idle}
"
            )
        };
        // nginx's totals include its GPU energy (+24 J dynamic, +6 J idle over 3 s).
        let before = format!("{BEFORE}{}", gpu(60, 20));
        let after = format!("{}{}", after(), gpu(84, 26));
        let b = counters(&scrape(&before), Group::Container);
        let a = counters(&scrape(&after), Group::Container);
        let rows = build(&b, &a, Duration::from_secs(3), SortBy::Power);
        let nginx = rows.iter().find(|r| r.key.name == "nginx").unwrap();
        assert!((nginx.gpu_watts - 10.0).abs() < 1e-9, "{nginx:?}");
        assert!((nginx.watts() - 12.0).abs() < 1e-9, "{nginx:?}");
        assert_eq!(nginx.joules, 186.0, "GPU energy is not counted twice");
        let sidecar = rows.iter().find(|r| r.key.name == "sidecar").unwrap();
        assert_eq!(sidecar.gpu_watts, 0.0);
        let text = render(&rows, "src", Group::Container, SortBy::Power, 200, 10);
        assert!(
            text.contains("gpu 10.00 W") && text.contains("GPU(W)"),
            "{text}"
        );
    }

    #[test]
    fn pods_sum_their_containers() {
        let b = counters(&scrape(BEFORE), Group::Pod);
        let a = counters(&scrape(&after()), Group::Pod);
        let rows = build(&b, &a, Duration::from_secs(3), SortBy::Power);
        let web = rows.iter().find(|r| r.key.pod == "web-1").unwrap();
        assert!((web.watts() - 13.0).abs() < 1e-9, "{web:?}");
        let text = render(
            &rows,
            "http://x/metrics",
            Group::Pod,
            SortBy::Power,
            200,
            10,
        );
        assert!(
            text.contains("group: pod") && text.contains("web-1"),
            "{text}"
        );
    }

    #[test]
    fn elapsed_comes_from_snapshot_times() {
        let t = |v: &str| {
            scrape(&format!("# TYPE kepler_exporter_snapshot_timestamp_seconds gauge\nkepler_exporter_snapshot_timestamp_seconds {v}\n"))
        };
        let fallback = Duration::from_secs(2);
        assert_eq!(
            elapsed_between(&t("100"), &t("103"), fallback),
            Duration::from_secs(3)
        );
        assert_eq!(
            elapsed_between(&t("103"), &t("103"), fallback),
            Duration::ZERO,
            "same snapshot: no new data"
        );
        assert_eq!(
            elapsed_between(&scrape(BEFORE), &t("103"), fallback),
            fallback
        );
    }

    #[test]
    fn render_cuts_to_width_and_rows() {
        let b = counters(&scrape(BEFORE), Group::Container);
        let rows = build(&b, &b, Duration::from_secs(3), SortBy::Name);
        let text = render(&rows, "src", Group::Container, SortBy::Name, 60, 1);
        assert_eq!(text.lines().count(), 3);
        assert!(text.lines().all(|l| l.chars().count() <= 60));
    }
}

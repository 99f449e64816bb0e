//! The results: an aligned table, then one JSON line `{"bench": {...}}` with every figure, the
//! parameters and the date.

use crate::bare::Bare;
use crate::budget::Budget;
use crate::phases::{quantile, Dispatch, EndToEnd, Submit};
use crate::scrape::Scrape;
use crate::staging::{StagingResult, Transfer};
use serde_json::{json, Map, Value};

/// Every phase's figures; a phase that did not run is `None`.
#[derive(Default)]
pub(crate) struct Report {
    pub(crate) submit: Option<Submit>,
    pub(crate) bare: Option<Bare>,
    /// The bare pipeline again, right after drover end to end: the yardstick is their mean, so
    /// that a machine that slows or speeds up during the run moves both sides of the ratio.
    pub(crate) bare_after: Option<Bare>,
    pub(crate) e2e: Option<EndToEnd>,
    pub(crate) dispatch: Option<Dispatch>,
    pub(crate) staging: Option<StagingResult>,
    pub(crate) scrape: Option<Scrape>,
}

/// `x` rounded to `digits` decimals.
fn round(x: f64, digits: i32) -> f64 {
    let scale = 10f64.powi(digits);
    (x * scale).round() / scale
}

/// A whole number with thousands separators: 34,000.
fn thousands(x: f64) -> String {
    let digits = format!("{:.0}", x.abs());
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if x < 0.0 && digits != "0" {
        out.insert(0, '-');
    }
    out
}

/// MB (10^6 bytes) per second.
fn mb_per_s(bytes: u64, seconds: f64) -> f64 {
    bytes as f64 / 1e6 / seconds
}

/// The median of sorted values.
fn median(sorted: &[f64]) -> f64 {
    match sorted.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

/// Rows of the table: phase, what, value, unit.
struct Table(Vec<[String; 4]>);

impl Table {
    fn row(&mut self, phase: &str, what: impl Into<String>, value: impl Into<String>, unit: &str) {
        self.0.push([phase.into(), what.into(), value.into(), unit.into()]);
    }

    fn print(&self) {
        let header = ["phase", "measurement", "value", "unit"].map(String::from);
        let width = |i: usize| self.0.iter().chain([&header]).map(|r| r[i].chars().count()).max().unwrap_or(0);
        let (w0, w1, w2) = (width(0), width(1), width(2));
        let line = |r: &[String; 4]| println!("{:<w0$}  {:<w1$}  {:>w2$}  {}", r[0], r[1], r[2], r[3]);
        line(&header);
        line(&["-".repeat(w0), "-".repeat(w1), "-".repeat(w2), "-".repeat(width(3))]);
        for r in &self.0 {
            line(r);
        }
    }
}

/// The rows of a phase's CPU per task: the machine's, then each party's; `pipeline` names the
/// pipeline's row and gives its task spawners' part, if any.
fn cpu_rows(t: &mut Table, phase: &str, cpu: &Budget, pipeline: (&str, Option<f64>)) {
    t.row(phase, "CPU per task, the machine's (every CPU's busy time)", thousands(cpu.machine), "µs");
    t.row(phase, "  the tasks' own processes (/bin/true)", thousands(cpu.tasks), "µs");
    t.row(phase, format!("  {}", pipeline.0), thousands(cpu.pipeline), "µs");
    if let Some(spawners) = pipeline.1 {
        t.row(phase, "    of it, its task spawners", thousands(spawners), "µs");
    }
    if cpu.submitter > 0.0 {
        t.row(phase, "  the submitter (drover task create)", thousands(cpu.submitter), "µs");
    }
    t.row(phase, "  the broker (RabbitMQ on this machine)", cpu.broker.map_or("-".into(), thousands), "µs");
    t.row(phase, "  Redis (the server's; in e2e, the submission's writes too)", thousands(cpu.redis), "µs");
    t.row(phase, "  the rest (kernel threads, the monitor, other processes)", thousands(cpu.rest), "µs");
}

/// A phase's CPU per task in the JSON line, in µs.
fn cpu_json(cpu: &Budget) -> Value {
    json!({
        "machine": round(cpu.machine, 1),
        "tasks": round(cpu.tasks, 1),
        "pipeline": round(cpu.pipeline, 1),
        "submitter": round(cpu.submitter, 1),
        "broker": cpu.broker.map(|b| round(b, 1)),
        "redis": round(cpu.redis, 1),
        "rest": round(cpu.rest, 1),
    })
}

impl Report {
    /// Prints the table and the JSON line to stdout.
    pub(crate) fn print(&self, args: &crate::Args) {
        let date = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let mut t = Table(Vec::new());
        let mut all = Map::new();
        all.insert("date".into(), json!(date));
        all.insert(
            "params".into(),
            json!({
                "tasks": args.tasks,
                "workers": args.workers,
                "slots": args.slots,
                "task_users": args.task_users(),
                "submit_tasks": args.submit_tasks,
                "dispatch_samples": args.dispatch_samples,
                "scrape_tasks": args.scrape_tasks,
                "phases": args.phases(),
                "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
            }),
        );

        if let Some(s) = &self.submit {
            let rate = s.tasks as f64 / s.seconds;
            let mib = s.peak_rss_kib as f64 / 1024.0;
            t.row(
                "submit",
                format!("submission rate ({} tasks, no worker)", thousands(s.tasks as f64)),
                thousands(rate),
                "tasks/s",
            );
            t.row("submit", format!("submitter peak RSS ({})", s.rss_method), format!("{mib:.1}"), "MiB");
            t.row("submit", "Redis per queued task", thousands(s.redis_bytes_per_queued_task), "bytes");
            all.insert(
                "submit".into(),
                json!({
                    "tasks": s.tasks,
                    "seconds": round(s.seconds, 3),
                    "tasks_per_s": round(rate, 1),
                    "peak_rss_kib": s.peak_rss_kib,
                    "peak_rss_mib": round(mib, 1),
                    "rss_method": s.rss_method,
                    "redis_bytes_per_queued_task": round(s.redis_bytes_per_queued_task, 1),
                }),
            );
        }

        let rate_of = |b: &Bare| b.messages as f64 / b.seconds;
        for (key, when, bare) in [("bare", "", &self.bare), ("bare_after", ", after e2e", &self.bare_after)] {
            let Some(b) = bare else { continue };
            t.row(
                "bare",
                format!(
                    "rate ({} msgs, {} children, prefetch {}{when})",
                    thousands(b.messages as f64),
                    b.children,
                    b.prefetch
                ),
                thousands(rate_of(b)),
                "tasks/s",
            );
            if key == "bare" {
                cpu_rows(&mut t, "bare", &b.cpu, ("the pipeline's process (publisher and consumer)", None));
            }
            all.insert(
                key.into(),
                json!({
                    "messages": b.messages,
                    "children": b.children,
                    "prefetch": b.prefetch,
                    "ack_every": b.ack_every,
                    "acks_sent": b.acks_sent,
                    "seconds": round(b.seconds, 3),
                    "publish_seconds": round(b.publish_seconds, 3),
                    "tasks_per_s": round(rate_of(b), 1),
                    "cpu_us_per_task": cpu_json(&b.cpu),
                }),
            );
        }
        let bare_rates: Vec<f64> = [&self.bare, &self.bare_after].into_iter().flatten().map(rate_of).collect();
        let bare_rate = (!bare_rates.is_empty()).then(|| bare_rates.iter().sum::<f64>() / bare_rates.len() as f64);

        if let Some(e) = &self.e2e {
            let rate = e.tasks as f64 / e.seconds;
            let ratio = bare_rate.map(|b| rate / b);
            t.row(
                "e2e",
                format!(
                    "rate ({} tasks, {} workers x {} slots, tasks as {})",
                    thousands(e.tasks as f64),
                    args.workers,
                    args.slots,
                    if args.task_users() { "their own users" } else { "the workers' user" }
                ),
                thousands(rate),
                "tasks/s",
            );
            let to = if bare_rates.len() > 1 { "ratio to bare (the mean of both)" } else { "ratio to bare" };
            t.row("e2e", to, ratio.map_or("-".into(), |r| format!("{r:.2}")), "");
            cpu_rows(
                &mut t,
                "e2e",
                &e.cpu,
                ("worker CPU per task (with its task spawners)", Some(e.spawner_cpu_us_per_task)),
            );
            t.row("e2e", "Redis per completed task", thousands(e.redis_bytes_per_completed_task), "bytes");
            t.row(
                "e2e",
                "one completed task record (MEMORY USAGE)",
                e.record_bytes.map_or("-".into(), |b| thousands(b as f64)),
                "bytes",
            );
            if e.failed > 0 {
                t.row("e2e", "tasks failed", e.failed.to_string(), "tasks");
            }
            all.insert(
                "e2e".into(),
                json!({
                    "tasks": e.tasks,
                    "seconds": round(e.seconds, 3),
                    "submit_seconds": round(e.submit_seconds, 3),
                    "tasks_per_s": round(rate, 1),
                    "ratio_to_bare": ratio.map(|r| round(r, 3)),
                    "succeeded": e.succeeded,
                    "failed": e.failed,
                    "worker_cpu_us_per_task": round(e.cpu.pipeline, 1),
                    "spawner_cpu_us_per_task": round(e.spawner_cpu_us_per_task, 1),
                    "redis_cpu_us_per_task": round(e.cpu.redis, 1),
                    "cpu_us_per_task": cpu_json(&e.cpu),
                    "redis_bytes_per_completed_task": round(e.redis_bytes_per_completed_task, 1),
                    "record_key": e.record_key,
                    "record_bytes": e.record_bytes,
                }),
            );
        }

        if let Some(d) = &self.dispatch {
            let l = &d.latencies_ms;
            let (p50, p99, max) = (quantile(l, 0.5), quantile(l, 0.99), l.last().copied());
            let mean_of = |l: &[i64]| (!l.is_empty()).then(|| round(l.iter().sum::<i64>() as f64 / l.len() as f64, 2));
            let mean = mean_of(l);
            let show = |v: Option<i64>| v.map_or("-".into(), |v| v.to_string());
            t.row("dispatch", format!("latency p50 ({} tasks)", l.len()), show(p50), "ms");
            t.row("dispatch", "latency p99", show(p99), "ms");
            let c = &d.client_ms;
            let (c50, c99) = (quantile(c, 0.5), quantile(c, 0.99));
            t.row("dispatch", format!("long-lived client p50 ({} tasks)", c.len()), show(c50), "ms");
            t.row("dispatch", "long-lived client p99", show(c99), "ms");
            let b = &d.bare_us;
            let (b50, b99) = (quantile(b, 0.5), quantile(b, 0.99));
            let us = |v: Option<u64>| v.map_or("-".into(), |v| thousands(v as f64));
            t.row("dispatch", "bare (lapin + redis alone) p50", us(b50), "µs");
            t.row("dispatch", "bare p99", us(b99), "µs");
            all.insert(
                "dispatch".into(),
                json!({
                    "samples": l.len(),
                    "p50_ms": p50,
                    "p99_ms": p99,
                    "max_ms": max,
                    "mean_ms": mean,
                    "client_p50_ms": c50,
                    "client_mean_ms": mean_of(c),
                    "client_p99_ms": c99,
                    "bare_p50_us": b50,
                    "bare_p99_us": b99,
                }),
            );
        }

        if let Some(s) = &self.staging {
            let mut sets = Map::new();
            for set in &s.sets {
                let figures = |x: &Transfer| {
                    json!({
                        "upload_mb_per_s": round(mb_per_s(set.bytes, x.upload_seconds), 3),
                        "download_mb_per_s": round(mb_per_s(set.bytes, x.download_seconds), 3),
                        "upload_files_per_s": round(set.files as f64 / x.upload_seconds, 1),
                        "download_files_per_s": round(set.files as f64 / x.download_seconds, 1),
                    })
                };
                let up = set.raw.upload_seconds / set.drover.upload_seconds;
                let down = set.raw.download_seconds / set.drover.download_seconds;
                for (direction, drover, raw, ratio) in [
                    ("upload", set.drover.upload_seconds, set.raw.upload_seconds, up),
                    ("download", set.drover.download_seconds, set.raw.download_seconds, down),
                ] {
                    for (via, seconds) in [("drover", drover), ("aws-sdk-s3", raw)] {
                        let unit = format!("MB/s, {} files/s", thousands(set.files as f64 / seconds));
                        t.row(
                            "staging",
                            format!("{} x {} {direction}, {via}", set.label, set.files),
                            format!("{:.2}", mb_per_s(set.bytes, seconds)),
                            &unit,
                        );
                    }
                    t.row(
                        "staging",
                        format!("{} x {} {direction}, drover/raw", set.label, set.files),
                        format!("{ratio:.2}"),
                        "",
                    );
                }
                sets.insert(
                    set.label.into(),
                    json!({
                        "files": set.files,
                        "bytes": set.bytes,
                        "drover": figures(&set.drover),
                        "raw": figures(&set.raw),
                        "ratio_drover_to_raw": { "upload": round(up, 3), "download": round(down, 3) },
                    }),
                );
            }
            all.insert("staging".into(), Value::Object(sets));
        }

        if let Some(s) = &self.scrape {
            let med = median(&s.ms);
            t.row(
                "scrape",
                format!("/metrics median of {} ({} tasks recorded)", s.ms.len(), thousands(s.tasks_recorded as f64)),
                format!("{med:.1}"),
                "ms",
            );
            if s.added > 0 {
                t.row(
                    "scrape",
                    format!("adding {} tasks first", thousands(s.added as f64)),
                    format!("{:.1}", s.add_seconds),
                    "s",
                );
            }
            all.insert(
                "scrape".into(),
                json!({
                    "gets": s.ms.len(),
                    "median_ms": round(med, 2),
                    "min_ms": s.ms.first().map(|m| round(*m, 2)),
                    "max_ms": s.ms.last().map(|m| round(*m, 2)),
                    "tasks_recorded": s.tasks_recorded,
                    "tasks_added": s.added,
                    "add_seconds": round(s.add_seconds, 3),
                    "body_bytes": s.body_bytes,
                }),
            );
        }

        println!("drover-bench {date}");
        t.print();
        println!("{}", json!({ "bench": all }));
    }
}

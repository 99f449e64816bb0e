//! drover-monitor with the real Prometheus: every dashboard panel's query and every alert rule
//! evaluates against the series the monitor exports while a job with successes, failures,
//! retries and staged files runs; the number of series does not grow with the tasks.

#![allow(clippy::unwrap_used)]

use drover_tests::{eventually, free_port, TestAccount};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

#[test]
fn the_prometheus_config_and_alert_rules_check() {
    for (what, file) in [("config", "deploy/prometheus/prometheus.yml"), ("rules", "deploy/prometheus/alerts.yml")] {
        let out = Command::new("promtool").args(["check", what]).arg(root().join(file)).output().expect("run promtool");
        assert!(out.status.success(), "promtool check {what} {file}: {}", String::from_utf8_lossy(&out.stderr));
    }
}

/// A Prometheus of the test's own, killed with it.
struct Prometheus {
    child: Child,
    url: String,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    fn start(dir: &Path, target: &str) -> Prometheus {
        let port = free_port();
        let config = json!({
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [root().join("deploy/prometheus/alerts.yml")],
            "scrape_configs": [{"job_name": "drover", "static_configs": [{"targets": [target]}]}],
        });
        std::fs::create_dir_all(dir).unwrap();
        // JSON is YAML.
        std::fs::write(dir.join("prometheus.yml"), config.to_string()).unwrap();
        let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", dir.join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start prometheus (scripts/services.sh --with-prometheus installs it)");
        Prometheus { child, url: format!("http://127.0.0.1:{port}") }
    }

    async fn get(&self, path: &str, query: &[(&str, &str)]) -> Value {
        let client = reqwest::Client::new();
        match client.get(format!("{}{path}", self.url)).query(query).send().await {
            Ok(r) => r.json().await.unwrap_or(Value::Null),
            Err(_) => Value::Null,
        }
    }

    async fn query(&self, expr: &str) -> Value {
        self.get("/api/v1/query", &[("query", expr)]).await
    }
}

/// Every query of a dashboard: its panels' targets and its variables, with the variables set.
fn dashboard_queries(file: &str, job: &str) -> Vec<(String, String)> {
    let d: Value =
        serde_json::from_str(&std::fs::read_to_string(root().join("grafana/dashboards").join(file)).unwrap()).unwrap();
    let fill = |e: &str| e.replace("$__rate_interval", "30s").replace("$pool", ".+").replace("$job", job);
    let mut queries = vec![];
    for p in d["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().unwrap() {
            queries.push((format!("{file}: {}", p["title"].as_str().unwrap()), fill(t["expr"].as_str().unwrap())));
        }
    }
    queries
}

#[tokio::test(flavor = "multi_thread")]
async fn every_panel_and_alert_query_answers_in_prometheus() {
    let mut acct = TestAccount::new("prometheus").await;
    acct.put("in/data.txt", "some input data\n").await;
    let pool = json!({"id": "p", "taskSlotsPerNode": 4, "enableAutoScale": true,
        "autoScaleFormula": "$TargetDedicatedNodes = 1;", "autoScaleEvaluationInterval": "PT1S"});
    let file = acct.file("pool.json", &pool.to_string());
    acct.ok(&["pool", "create", "--json-file", file.to_str().unwrap()]);
    acct.remember_pool("p");
    acct.ok(&["job", "create", "--job-id", "j", "--pool-id", "p"]);
    let mut tasks: Vec<Value> = (0..12)
        .map(|n| json!({"id": format!("ok{n}"), "commandLine": "/bin/sh -c 'cat data.txt > out.txt'",
            "resourceFiles": [{"httpUrl": acct.s3_url("in/data.txt"), "filePath": "data.txt"}],
            "outputFiles": [{"filePattern": "out.txt", "destination": {"container": {"containerUrl": acct.s3_url(&format!("out/{n}"))}}}]}))
        .collect();
    tasks.extend((0..3).map(|n| json!({"id": format!("bad{n}"), "commandLine": "/bin/false"})));
    tasks.push(json!({"id": "flaky", "commandLine": "/bin/sh -c 'test -f ../../flaky-ran || { touch ../../flaky-ran; exit 2; }'",
        "constraints": {"maxTaskRetryCount": 1}}));
    let body: String = tasks.iter().map(|t| format!("{t}\n")).collect();
    let file = acct.file("tasks.jsonl", &body);
    acct.ok(&["task", "create", "--job-id", "j", "--json-file", file.to_str().unwrap()]);
    let listen = format!("127.0.0.1:{}", free_port());
    acct.start_monitor(&["--listen", &listen]);
    let wait = acct.drover(&["job", "wait", "--job-id", "j", "--timeout", "120"]);
    assert_eq!(wait.code, 1, "three tasks fail: {wait:?}");

    let prom = Prometheus::start(&acct.work_dir.join("prometheus"), &listen);
    eventually(Duration::from_secs(60), "Prometheus has scraped the monitor for a while", || async {
        let r = prom.query("count_over_time(drover_scrape_duration_seconds[1m]) >= 5").await;
        r["data"]["result"].as_array().is_some_and(|a| !a.is_empty())
    })
    .await;
    let mut queries = dashboard_queries("overview.json", "j");
    queries.extend(dashboard_queries("job.json", "j"));
    let mut failures = vec![];
    for (panel, expr) in &queries {
        let r = prom.query(expr).await;
        let data = r["data"]["result"].as_array().map_or(0, Vec::len);
        if r["status"] != "success" || data == 0 {
            failures.push(format!("{panel}: {expr} -> {r}"));
        }
    }
    assert!(failures.is_empty(), "panels without data:\n{}", failures.join("\n"));
    for label in ["pool", "job_id"] {
        let metric = if label == "pool" { "drover_tasks" } else { "drover_job_tasks" };
        let r = prom.get(&format!("/api/v1/label/{label}/values"), &[("match[]", metric)]).await;
        assert!(r["data"].as_array().is_some_and(|a| !a.is_empty()), "variable {label}: {r}");
    }
    // Every alert rule is loaded and evaluates without error.
    let deadline = Instant::now() + Duration::from_secs(30);
    let rules = loop {
        let r = prom.get("/api/v1/rules", &[]).await;
        let rules: Vec<Value> = r["data"]["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
            .collect();
        if !rules.is_empty() && rules.iter().all(|rule| rule["health"] == "ok") {
            break rules;
        }
        assert!(Instant::now() < deadline, "alert rules not all healthy: {r}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(rules.len(), 7, "{rules:?}");
    println!("{} panel queries and {} alert rules evaluated with data", queries.len(), rules.len());
}

fn series(metrics: &str) -> Vec<String> {
    let mut s: Vec<String> = metrics
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.rsplit_once(' ').map(|(name, _)| name.to_string()))
        .collect();
    s.sort();
    s
}

#[tokio::test(flavor = "multi_thread")]
async fn the_number_of_series_does_not_grow_with_tasks() {
    let mut acct = TestAccount::new("series").await;
    acct.pool("p", 8);
    let listen = format!("127.0.0.1:{}", free_port());
    acct.start_monitor(&["--listen", &listen]);
    acct.start_worker("p", &[]);
    acct.start_worker("p", &[]);
    let scrape = || async {
        let started = Instant::now();
        let text = reqwest::get(format!("http://{listen}/metrics")).await.unwrap().text().await.unwrap();
        (text, started.elapsed())
    };
    eventually(Duration::from_secs(10), "the monitor answers", || async {
        reqwest::get(format!("http://{listen}/health")).await.is_ok()
    })
    .await;
    let run = |job: &str, n: usize| {
        acct.ok(&["job", "create", "--job-id", job, "--pool-id", "p"]);
        let body: String = (0..n)
            .map(|i| {
                let cmd = if i % 10 == 9 { "/bin/false" } else { "/bin/true" };
                format!("{}\n", json!({"id": format!("t{i}"), "commandLine": cmd}))
            })
            .collect();
        let file = acct.file(&format!("{job}.jsonl"), &body);
        acct.ok(&["task", "create", "--job-id", job, "--json-file", file.to_str().unwrap()]);
        let wait = acct.drover(&["job", "wait", "--job-id", job, "--timeout", "600"]);
        assert!(wait.code == 1 && wait.stderr.contains(&format!("{n} of {n} tasks completed")), "{wait:?}");
        acct.ok(&["job", "terminate", "--job-id", job]);
    };
    run("small", 20);
    let (before, _) = scrape().await;
    run("big", 10_000);
    let (after, took) = scrape().await;
    assert_eq!(series(&before), series(&after), "series changed after 10,000 more tasks");
    assert!(after.contains("drover_tasks_completed_total{pool=\"p\",result=\"success\",code=\"\"} 9018"), "{after}");
    println!("/metrics: {} series, scraped in {took:?} with 10,020 tasks recorded", series(&after).len());
}

//! A `/metrics` scrape of drover-monitor for the bench account: 20 GETs, timed one by one,
//! optionally after queueing many more tasks (on a pool with no worker).

use crate::farm::{Farm, QUEUE_POOL};
use anyhow::{bail, Context, Result};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How many times /metrics is fetched.
const SCRAPES: usize = 20;

/// What the scrape phase measured.
pub(crate) struct Scrape {
    /// Tasks recorded in the account when it was scraped.
    pub(crate) tasks_recorded: u64,
    /// Tasks added for this phase, and how long their submission took.
    pub(crate) added: u64,
    pub(crate) add_seconds: f64,
    /// Each GET, sorted, in ms.
    pub(crate) ms: Vec<f64>,
    pub(crate) body_bytes: usize,
}

/// One `GET <path>` over HTTP/1.1 (Connection: close): the status code and the body's length.
async fn get(address: &str, path: &str) -> Result<(u16, usize)> {
    let mut stream = TcpStream::connect(address).await.with_context(|| format!("connect to {address}"))?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.with_context(|| format!("send GET {path}"))?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.with_context(|| format!("read the answer to GET {path}"))?;
    let text = String::from_utf8_lossy(&response);
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .with_context(|| format!("GET {path}: not an HTTP answer"))?;
    let body = text.find("\r\n\r\n").map_or(0, |i| response.len() - i - 4);
    Ok((code, body))
}

/// Adds `add` tasks (if any), starts drover-monitor on a free port, waits for /health, then
/// times the GETs of /metrics.
pub(crate) async fn run(farm: &mut Farm, add: u64) -> Result<Scrape> {
    let mut add_seconds = 0.0;
    if add > 0 {
        let file = farm.task_file("scrape.jsonl", add)?;
        farm.pool_and_job(QUEUE_POOL, 1, "scrape").await?;
        let start = Instant::now();
        let file = file.to_string_lossy().into_owned();
        farm.drover(&["task", "create", "--job-id", "scrape", "--json-file", &file]).await?;
        add_seconds = start.elapsed().as_secs_f64();
    }
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").context("find a free port")?;
        probe.local_addr().context("find a free port")?.port()
    };
    let address = format!("127.0.0.1:{port}");
    let mut cmd = farm.command("drover-monitor");
    cmd.arg("--listen").arg(&address).stdin(Stdio::null());
    farm.monitor = Some(farm.spawn_logged(cmd, "monitor")?);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(Ok((200, _))) = tokio::time::timeout(Duration::from_secs(5), get(&address, "/health")).await {
            break;
        }
        if let Some(monitor) = farm.monitor.as_mut() {
            if let Some(status) = monitor.child.try_wait().context("check drover-monitor")? {
                bail!("drover-monitor exited ({status}):\n{}", crate::farm::tail(&monitor.log, 20));
            }
        }
        if Instant::now() > deadline {
            bail!("drover-monitor did not answer /health within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut tasks_recorded = 0;
    for job in farm.store.job_ids().await.context("list the account's jobs")? {
        let counts = farm.store.task_counts(&job).await.with_context(|| format!("task counts of job {job}"))?;
        tasks_recorded += counts.task_counts.total();
    }
    let mut ms = Vec::with_capacity(SCRAPES);
    let mut body_bytes = 0;
    for _ in 0..SCRAPES {
        let start = Instant::now();
        let (code, body) = tokio::time::timeout(Duration::from_secs(60), get(&address, "/metrics"))
            .await
            .context("GET /metrics took over 60 s")??;
        ms.push(start.elapsed().as_secs_f64() * 1e3);
        if code != 200 {
            bail!("GET /metrics answered {code}");
        }
        body_bytes = body;
    }
    ms.sort_by(f64::total_cmp);
    Ok(Scrape { tasks_recorded, added: add, add_seconds, ms, body_bytes })
}

//! The Prometheus exporter: each scrape reads the counters the status store keeps, the pool's
//! nodes and the broker's queue figures, and renders them with the prometheus crate's text
//! encoder. Nothing scans task records, and per-job series exist only for active jobs, so the
//! number of series stays bounded however many tasks and jobs have run.

use drover_core::model::node::NodeState;
use drover_core::queue::{Band, Topology};
use drover_core::status::{Histogram, JobBacklog, StatusStore, BUCKETS_MS};
use drover_core::Config;
use prometheus::proto::{self, LabelPair, Metric, MetricFamily, MetricType};
use prometheus::Encoder;
use std::collections::HashMap;
use std::time::Instant;

/// Every metric the monitor exports: name, type, help. The README lists them from here.
pub(crate) const METRICS: &[(&str, MetricType, &str)] = &[
    ("drover_queue_messages_ready", MetricType::GAUGE, "Task messages waiting in the pool's queue for a band, not yet delivered."),
    ("drover_queue_messages_unacked", MetricType::GAUGE, "Task messages delivered to nodes and not yet acknowledged (held or running), per band."),
    ("drover_queue_consumers", MetricType::GAUGE, "Nodes consuming the pool's queue for a band."),
    ("drover_tasks", MetricType::GAUGE, "Tasks of the pool's active jobs by state (active: queued or held; running: preparing or running)."),
    ("drover_tasks_held", MetricType::GAUGE, "Active tasks held by their dependencies (waiting on parents, or blocked by a failed one)."),
    ("drover_task_slots", MetricType::GAUGE, "Task slots the pool's active jobs need, by state."),
    ("drover_oldest_active_task_age_seconds", MetricType::GAUGE, "How long the pool's oldest queued task has waited to start (0 when none waits)."),
    ("drover_tasks_completed_total", MetricType::COUNTER, "Tasks completed in the pool, by result and failure code (code is empty for success)."),
    ("drover_task_retries_total", MetricType::COUNTER, "Task attempts that failed and were retried under maxTaskRetryCount."),
    ("drover_task_requeues_total", MetricType::COUNTER, "Task attempts handed back or taken over from a lost node (requeueCount)."),
    ("drover_task_duration_seconds", MetricType::HISTOGRAM, "Run time of completed tasks' last attempt, from start to completion."),
    ("drover_task_queue_wait_seconds", MetricType::HISTOGRAM, "Time from a task becoming runnable to an attempt starting."),
    ("drover_staged_bytes_total", MetricType::COUNTER, "Bytes nodes downloaded for tasks (direction in) and uploaded from them (out)."),
    ("drover_nodes", MetricType::GAUGE, "The pool's nodes by state (offline: heartbeat lost)."),
    ("drover_node_slots", MetricType::GAUGE, "Task slots of the pool's live nodes."),
    ("drover_node_slots_used", MetricType::GAUGE, "Task slots in use on the pool's live nodes."),
    ("drover_autoscale_target_nodes", MetricType::GAUGE, "The node count the pool's last autoscale evaluation asked for."),
    ("drover_dead_letter_messages", MetricType::GAUGE, "Messages in the account's dead-letter queue (drover dead-letter list)."),
    ("drover_job_tasks", MetricType::GAUGE, "Tasks of an active job (label job_id: Prometheus keeps job for the scrape job) by state (active, running, completed, succeeded, failed)."),
    ("drover_scrape_duration_seconds", MetricType::GAUGE, "How long this scrape took to read the status store and the broker."),
];

/// A queue's figures: ready, unacked (unknown without the management API), consumers.
#[derive(Debug, Clone, Copy, Default)]
struct QueueFigures {
    ready: u64,
    unacked: Option<u64>,
    consumers: u64,
}

pub(crate) struct Exporter {
    store: StatusStore,
    config: Config,
    topology: Topology,
    http: reqwest::Client,
    /// The RabbitMQ management API (for unacked counts), e.g. http://guest:guest@127.0.0.1:15672.
    api: Option<String>,
}

/// Builds the families of one scrape.
#[derive(Default)]
struct Families {
    by_name: HashMap<&'static str, Vec<Metric>>,
}

fn labels(pairs: &[(&str, &str)]) -> Vec<LabelPair> {
    pairs
        .iter()
        .map(|(k, v)| {
            let mut l = LabelPair::default();
            l.set_name((*k).to_string());
            l.set_value((*v).to_string());
            l
        })
        .collect()
}

impl Families {
    fn gauge(&mut self, name: &'static str, pairs: &[(&str, &str)], value: f64) {
        let mut g = proto::Gauge::default();
        g.set_value(value);
        let mut m = Metric::from_label(labels(pairs));
        m.set_gauge(g);
        self.by_name.entry(name).or_default().push(m);
    }

    fn counter(&mut self, name: &'static str, pairs: &[(&str, &str)], value: f64) {
        let mut c = proto::Counter::default();
        c.set_value(value);
        let mut m = Metric::from_label(labels(pairs));
        m.set_counter(c);
        self.by_name.entry(name).or_default().push(m);
    }

    fn histogram(&mut self, name: &'static str, pairs: &[(&str, &str)], h: &Histogram) {
        let mut total = 0;
        let buckets = BUCKETS_MS
            .iter()
            .zip(&h.buckets)
            .map(|(bound, n)| {
                total += n;
                let mut b = proto::Bucket::default();
                b.set_upper_bound(*bound as f64 / 1000.0);
                b.set_cumulative_count(total);
                b
            })
            .collect();
        let mut p = proto::Histogram::default();
        p.set_bucket(buckets);
        p.set_sample_count(h.count);
        p.set_sample_sum(h.sum_ms as f64 / 1000.0);
        let mut m = Metric::from_label(labels(pairs));
        m.set_histogram(p);
        self.by_name.entry(name).or_default().push(m);
    }

    fn finish(mut self) -> Vec<MetricFamily> {
        METRICS
            .iter()
            .filter_map(|(name, kind, help)| {
                let metrics = self.by_name.remove(name)?;
                let mut f = MetricFamily::default();
                f.set_name((*name).to_string());
                f.set_help((*help).to_string());
                f.set_field_type(*kind);
                f.set_metric(metrics);
                Some(f)
            })
            .collect()
    }
}

fn band_name(band: Band) -> &'static str {
    match band {
        Band::High => "high",
        Band::Normal => "normal",
        Band::Low => "low",
    }
}

impl Exporter {
    pub(crate) fn new(store: StatusStore, config: Config, api: Option<String>) -> anyhow::Result<Self> {
        let builder = reqwest::Client::builder().timeout(std::time::Duration::from_secs(5));
        let http = drover_core::tls::http_client(builder, config.ca_file.as_deref())?;
        let topology = Topology::new(&config.account);
        Ok(Exporter { store, config, topology, http, api })
    }

    /// One scrape, in the Prometheus text format.
    pub(crate) async fn render(&self) -> anyhow::Result<String> {
        let started = Instant::now();
        let mut f = Families::default();
        let queues = self.queue_figures().await;
        let now = drover_core::model::now_ms();
        for pool in self.store.list_pools().await? {
            let p = pool.spec.id.as_str();
            for band in Band::ALL {
                let q = queues.get(&self.topology.band_queue(p, band)).copied().unwrap_or_default();
                let l = [("pool", p), ("band", band_name(band))];
                f.gauge("drover_queue_messages_ready", &l, q.ready as f64);
                if let Some(unacked) = q.unacked {
                    f.gauge("drover_queue_messages_unacked", &l, unacked as f64);
                }
                f.gauge("drover_queue_consumers", &l, q.consumers as f64);
            }
            let jobs = self.store.pool_jobs(p).await?;
            let backlogs = self.store.job_backlogs(&jobs).await?;
            let sum = |f: fn(&JobBacklog) -> u64| backlogs.iter().map(f).sum::<u64>() as f64;
            f.gauge("drover_tasks", &[("pool", p), ("state", "active")], sum(|b| b.active));
            f.gauge("drover_tasks", &[("pool", p), ("state", "running")], sum(|b| b.running));
            f.gauge("drover_task_slots", &[("pool", p), ("state", "active")], sum(|b| b.active_slots));
            f.gauge("drover_task_slots", &[("pool", p), ("state", "running")], sum(|b| b.running_slots));
            f.gauge("drover_tasks_held", &[("pool", p)], sum(|b| b.held));
            let oldest = self.store.oldest_queued(&jobs).await?.into_iter().flatten().min();
            let age = oldest.map_or(0.0, |t| (now - t).max(0) as f64 / 1000.0);
            f.gauge("drover_oldest_active_task_age_seconds", &[("pool", p)], age);
            for (job, b) in jobs.iter().zip(&backlogs) {
                for (state, n) in [
                    ("active", b.active),
                    ("running", b.running),
                    ("completed", b.completed),
                    ("succeeded", b.succeeded),
                    ("failed", b.failed),
                ] {
                    f.gauge("drover_job_tasks", &[("pool", p), ("job_id", job), ("state", state)], n as f64);
                }
            }
            let stats = self.store.pool_stats(p).await?;
            for (result, code, n) in &stats.completed {
                f.counter(
                    "drover_tasks_completed_total",
                    &[("pool", p), ("result", result), ("code", code)],
                    *n as f64,
                );
            }
            if !stats.completed.iter().any(|(r, _, _)| r == "success") {
                f.counter("drover_tasks_completed_total", &[("pool", p), ("result", "success"), ("code", "")], 0.0);
            }
            f.counter("drover_task_retries_total", &[("pool", p)], stats.retries as f64);
            f.counter("drover_task_requeues_total", &[("pool", p)], stats.requeues as f64);
            f.counter("drover_staged_bytes_total", &[("pool", p), ("direction", "in")], stats.bytes_in as f64);
            f.counter("drover_staged_bytes_total", &[("pool", p), ("direction", "out")], stats.bytes_out as f64);
            f.histogram("drover_task_duration_seconds", &[("pool", p)], &stats.duration);
            f.histogram("drover_task_queue_wait_seconds", &[("pool", p)], &stats.queue_wait);
            let nodes = self.store.list_nodes(p).await?;
            for state in NodeState::ALL {
                let n = nodes.iter().filter(|node| node.state == state).count();
                f.gauge("drover_nodes", &[("pool", p), ("state", state.as_str())], n as f64);
            }
            let live = nodes.iter().filter(|n| n.state != NodeState::Offline);
            let (slots, used) = live.fold((0u32, 0u32), |(s, u), n| (s + n.task_slots, u + n.running_task_slots_count));
            f.gauge("drover_node_slots", &[("pool", p)], f64::from(slots));
            f.gauge("drover_node_slots_used", &[("pool", p)], f64::from(used));
            if let Some(target) = self.store.last_autoscale(p).await?.and_then(|r| r.target_dedicated_nodes) {
                f.gauge("drover_autoscale_target_nodes", &[("pool", p)], f64::from(target));
            }
        }
        let dead = queues.get(&self.topology.dead_letters()).copied().unwrap_or_default();
        f.gauge("drover_dead_letter_messages", &[], (dead.ready + dead.unacked.unwrap_or(0)) as f64);
        f.gauge("drover_scrape_duration_seconds", &[], started.elapsed().as_secs_f64());
        let mut out = Vec::new();
        prometheus::TextEncoder::new().encode(&f.finish(), &mut out)?;
        Ok(String::from_utf8(out)?)
    }

    /// The account's queues: from the management API when it answers (ready, unacked,
    /// consumers), else from passive declares over AMQP (ready, consumers).
    async fn queue_figures(&self) -> HashMap<String, QueueFigures> {
        if let Some(api) = &self.api {
            match self.queues_from_api(api).await {
                Ok(q) => return q,
                Err(e) => tracing::debug!(error = %e, "management API unavailable; reading queues over AMQP"),
            }
        }
        self.queues_from_amqp().await.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "cannot read the queues");
            HashMap::new()
        })
    }

    async fn queues_from_api(&self, api: &str) -> anyhow::Result<HashMap<String, QueueFigures>> {
        #[derive(serde::Deserialize)]
        struct Q {
            name: String,
            #[serde(default)]
            messages_ready: u64,
            #[serde(default)]
            messages_unacknowledged: u64,
            #[serde(default)]
            consumers: u64,
        }
        let url = reqwest::Url::parse(api)?;
        let (user, pass) = (url.username().to_string(), url.password().unwrap_or_default().to_string());
        // The queues of the broker's vhost (names alone may repeat on other vhosts).
        let first = self.config.amqp_url.first().ok_or_else(|| anyhow::anyhow!("amqp-url: none given"))?;
        let vhost = drover_core::queue::parse_url(first, 0)?.vhost;
        let mut list = url.join("api/queues/")?;
        list.path_segments_mut()
            .map_err(|()| anyhow::anyhow!("rabbitmq-api: not a base URL"))?
            .pop_if_empty()
            .push(&vhost);
        list.set_username("").ok();
        list.set_password(None).ok();
        list.set_query(Some("columns=name,messages_ready,messages_unacknowledged,consumers"));
        let queues: Vec<Q> =
            self.http.get(list).basic_auth(user, Some(pass)).send().await?.error_for_status()?.json().await?;
        let prefix = format!("drover.{}.", self.config.account);
        Ok(queues
            .into_iter()
            .filter(|q| q.name.starts_with(&prefix))
            .map(|q| {
                let figures = QueueFigures {
                    ready: q.messages_ready,
                    unacked: Some(q.messages_unacknowledged),
                    consumers: q.consumers,
                };
                (q.name, figures)
            })
            .collect())
    }

    async fn queues_from_amqp(&self) -> anyhow::Result<HashMap<String, QueueFigures>> {
        let connection = drover_core::queue::connect(&self.config.broker(), "drover-monitor").await?;
        let mut names = vec![self.topology.dead_letters()];
        for pool in self.store.list_pools().await? {
            names.extend(Band::ALL.iter().map(|b| self.topology.band_queue(&pool.spec.id, *b)));
        }
        let mut figures = HashMap::new();
        for name in names {
            // A passive declare of a missing queue closes the channel: one channel per queue.
            let channel = connection.create_channel().await?;
            let options = lapin::options::QueueDeclareOptions { passive: true, ..Default::default() };
            if let Ok(q) = channel.queue_declare(name.as_str().into(), options, Default::default()).await {
                let f = QueueFigures {
                    ready: q.message_count().into(),
                    unacked: None,
                    consumers: q.consumer_count().into(),
                };
                figures.insert(name, f);
            }
            let _ = channel.close(200, "ok".into()).await;
        }
        let _ = connection.close(200, "bye".into()).await;
        Ok(figures)
    }
}

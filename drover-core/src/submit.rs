//! Adding tasks to a job: reading task files and the all-or-nothing, confirmed submission.
//!
//! A task file is one TaskAddParameter, a JSON array of them, Azure's `{"value":[...]}`
//! collection, or JSON Lines, read as `az` reads it (`model::lenient`); it is streamed, never
//! held whole. Submission reads it twice: first
//! to validate every task (fields, duplicate ids in the file and in the job), then to write the
//! records to Redis in batches, each with its outbox of runnable tasks, which is published with
//! confirms and cleared. A file
//! with one bad task adds none, unless the caller chose to skip bad tasks.

use crate::model::{lenient, TaskAddParameter};
use crate::queue::Publisher;
use crate::status::StatusStore;
use crate::{Error, Result};
use serde::de::{SeqAccess, Visitor};
use serde_json::value::RawValue;
use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::hash::BuildHasher;
use std::io::Read;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::rc::Rc;

/// Tasks per Redis write (one atomic script per batch).
const BATCH: usize = 500;
/// Batches whose messages may wait for their confirms at once while the next is written.
const PUBLISHING: usize = 2;
/// Parent ids per Redis write: a batch ends early when its tasks depend on this many.
const BATCH_PARENTS: usize = 20_000;

/// One entry of a task file: the task, or why it is not a valid task (naming where it is).
pub type Entry = Result<TaskAddParameter>;

/// Calls `each(index, entry)` for every task in the file, in order, streaming it. A JSON syntax
/// error stops the reading (with its line and column); a task with a bad field is handed to
/// `each` as an error, so the caller decides whether to go on.
pub fn read_tasks(path: &Path, mut each: impl FnMut(usize, Entry) -> Result<()>) -> Result<usize> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(format!("--json-file {}", path.display()), e))?;
    let mut reader = BufReader::with_capacity(1 << 16, file);
    let head = reader.fill_buf().map_err(|e| Error::io(format!("read {}", path.display()), e))?;
    // A UTF-8 byte-order mark (Windows editors, PowerShell) is skipped, as az does.
    if head.starts_with("\u{feff}".as_bytes()) {
        reader.consume(3);
    }
    let head = reader.fill_buf().map_err(|e| Error::io(format!("read {}", path.display()), e))?;
    let start = head.iter().position(|b| !b.is_ascii_whitespace());
    let first = start.map(|i| head[i]);
    let collection = first == Some(b'{') && is_collection(&head[start.unwrap_or(0)..]);
    let position = Rc::new(RefCell::new(Position { line: 1, column: 0, lines: Vec::new() }));
    let reader = LineCounter { inner: reader, position: position.clone() };
    let name = path.display();
    let at = |e: serde_json::Error| Error::invalid(format!("{name}: {e}"));
    let mut count = 0usize;
    // `start`: where the task starts in the file (line, column), when known.
    let mut call = |raw: &RawValue, place: String, start: Option<(usize, usize)>| -> Result<()> {
        let entry = match lenient::read_checked::<TaskAddParameter>("TaskAddParameter", raw.get(), start) {
            Ok((task, notes)) => {
                note_once(&name.to_string(), notes);
                Ok(task)
            }
            Err(e) => Err(Error::invalid(format!("{name}: task {place}: {e}"))),
        };
        each(count, entry)?;
        count += 1;
        Ok(())
    };
    let start = |raw: &RawValue| position.borrow_mut().start_of(raw.get());
    match first {
        None => return Err(Error::invalid(format!("{name}: the file holds no task"))),
        Some(c) if c == b'[' || collection => {
            let mut de = serde_json::Deserializer::from_reader(reader);
            let mut failure = None;
            let mut n = 0usize;
            let mut each_value = |v: Box<RawValue>| {
                n += 1;
                let at = start(&v);
                call(&v, format!("#{n}"), Some(at))
            };
            let values = Values { each: &mut each_value, failure: &mut failure };
            let read = if collection {
                serde::Deserializer::deserialize_map(&mut de, Collection(values))
            } else {
                serde::Deserializer::deserialize_seq(&mut de, values)
            };
            read.map_err(|e| failure.take().unwrap_or_else(|| at(e)))?;
            de.end().map_err(at)?;
        }
        Some(_) => {
            for (n, v) in serde_json::Deserializer::from_reader(reader).into_iter::<Box<RawValue>>().enumerate() {
                let v = v.map_err(at)?;
                let at = start(&v);
                call(&v, format!("#{}", n + 1), Some(at))?;
            }
        }
    }
    if count == 0 {
        return Err(Error::invalid(format!("{name}: the file holds no task")));
    }
    Ok(count)
}

/// Warns once per process of each field kept without effect (`notes`, from `lenient`) in the
/// file `name`, whatever task it was in: a file is read more than once, and may hold millions.
fn note_once(name: &str, notes: Vec<String>) {
    static NOTED: std::sync::Mutex<BTreeSet<String>> = std::sync::Mutex::new(BTreeSet::new());
    for note in notes {
        // The same field of every task is one note: `outputFiles[3].x` is `outputFiles[].x`.
        let mut general = String::with_capacity(note.len());
        let mut in_index = false;
        for c in note.chars() {
            match c {
                '[' => in_index = true,
                ']' => in_index = false,
                _ if in_index => continue,
                _ => {}
            }
            general.push(c);
        }
        let fresh = NOTED.lock().map(|mut noted| noted.insert(format!("{name}\0{general}"))).unwrap_or(false);
        if fresh {
            tracing::warn!("{name}: {general}");
        }
    }
}

/// Follows where the JSON parser is in the file, to say where a task starts.
struct LineCounter<R> {
    inner: R,
    position: Rc<RefCell<Position>>,
}

/// The parser's place: its line, the characters read of it, and the length (in characters) of
/// each line since the last task was read.
struct Position {
    line: usize,
    column: usize,
    lines: Vec<usize>,
}

impl Position {
    /// Where `raw`, the value just read (it ends where the parser is), starts: (line, column).
    fn start_of(&mut self, raw: &str) -> (usize, usize) {
        let above = raw.matches('\n').count();
        let first = raw.split('\n').next().unwrap_or("").chars().count();
        let line_length =
            if above == 0 { self.column } else { self.lines.len().checked_sub(above).map_or(0, |i| self.lines[i]) };
        self.lines.clear();
        (self.line.saturating_sub(above), line_length.saturating_sub(first) + 1)
    }
}

impl<R: Read> Read for LineCounter<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        let mut p = self.position.borrow_mut();
        for b in &buf[..n] {
            if *b == b'\n' {
                let length = std::mem::take(&mut p.column);
                p.lines.push(length);
                p.line += 1;
            } else if b & 0xC0 != 0x80 {
                p.column += 1;
            }
        }
        Ok(n)
    }
}

/// Whether the buffered start of a file is `{ "value":` (Azure's task collection).
fn is_collection(head: &[u8]) -> bool {
    let rest = head.strip_prefix(b"{").unwrap_or(head);
    let rest = &rest[rest.iter().position(|b| !b.is_ascii_whitespace()).unwrap_or(rest.len())..];
    rest.starts_with(b"\"value\"")
}

struct Values<'a, F> {
    each: &'a mut F,
    failure: &'a mut Option<Error>,
}

impl<'de, F: FnMut(Box<RawValue>) -> Result<()>> Visitor<'de> for Values<'_, F> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an array of tasks")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(value) = seq.next_element::<Box<RawValue>>()? {
            if let Err(e) = (self.each)(value) {
                *self.failure = Some(e);
                return Err(serde::de::Error::custom("stopped"));
            }
        }
        Ok(())
    }
}

impl<'de, F: FnMut(Box<RawValue>) -> Result<()>> serde::de::DeserializeSeed<'de> for Values<'_, F> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, de: D) -> Result<(), D::Error> {
        de.deserialize_seq(self)
    }
}

/// Azure's task collection, `{"value": [...]}`, its tasks streamed as an array's are.
struct Collection<'a, F>(Values<'a, F>);

impl<'de, F: FnMut(Box<RawValue>) -> Result<()>> Visitor<'de> for Collection<'_, F> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a task collection, {\"value\": [tasks]}")
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut values = Some(self.0);
        while let Some(key) = map.next_key::<String>()? {
            match (key.as_str(), values.take()) {
                ("value", Some(v)) => map.next_value_seed(v)?,
                ("value", None) => return Err(serde::de::Error::duplicate_field("value")),
                _ => return Err(serde::de::Error::unknown_field(&key, &["value"])),
            }
        }
        Ok(())
    }
}

/// How many bad tasks a refused file names.
const SHOWN_PROBLEMS: usize = 20;

/// The error for a file with `refused` bad tasks, the first of them described in `problems`.
fn refusal(refused: usize, mut problems: Vec<String>) -> Error {
    if refused == 1 && problems.len() == 1 {
        return Error::invalid(problems.remove(0));
    }
    let more = refused.saturating_sub(problems.len());
    let more = if more > 0 { format!("; and {more} more") } else { String::new() };
    Error::invalid(format!("{refused} tasks are not valid: {}{more}", problems.join("; ")))
}

/// What a submission did.
#[derive(Debug, Default, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AddReport {
    /// Tasks added (and published).
    pub added: usize,
    /// Tasks skipped with `--continue-on-error`: (task id or #index, reason).
    pub skipped: Vec<(String, String)>,
}

/// Where tasks go and how.
pub struct Submission<'a> {
    pub store: &'a StatusStore,
    pub publisher: &'a Publisher,
    pub job_id: &'a str,
    /// Skip bad tasks instead of refusing the whole file.
    pub continue_on_error: bool,
    /// Called with the number of tasks added so far.
    pub progress: &'a (dyn Fn(usize) + Sync),
}

/// Refuses a task that needs more slots than any node of its pool has.
fn check_slots(task: &TaskAddParameter, pool: &str, pool_slots: u32) -> Result<()> {
    if task.slots() > pool_slots {
        return Err(Error::invalid(format!(
            "task {:?}: requiredSlots {} is more than pool {pool:?}'s taskSlotsPerNode {pool_slots}",
            task.id,
            task.slots()
        )));
    }
    Ok(())
}

/// A fixed hasher, so the duplicate check is the same in both passes.
#[derive(Clone, Copy, Default)]
struct IdHasher;
impl BuildHasher for IdHasher {
    type Hasher = std::collections::hash_map::DefaultHasher;
    fn build_hasher(&self) -> Self::Hasher {
        std::collections::hash_map::DefaultHasher::new()
    }
}

fn id_hash(id: &str) -> u64 {
    IdHasher.hash_one(id)
}

impl Submission<'_> {
    /// Adds every task of the file at `path` (see the module docs for the guarantees).
    pub async fn add_file(&mut self, path: &Path) -> Result<AddReport> {
        let job = self.store.get_job(self.job_id).await?;
        if job.state != crate::model::JobState::Active {
            return Err(Error::State(format!(
                "job {:?} is {}: tasks can only be added to an active job",
                self.job_id,
                job.state.as_str()
            )));
        }
        let pool = job.spec.pool_info.pool_id.clone();
        let mut report = AddReport::default();
        // The file is read twice (to stream any size): what the second read stores must be what
        // the first checked. A pipe or device could give something else each time.
        let shown = path.display();
        let stamp = || -> Result<(u64, Option<std::time::SystemTime>)> {
            let meta = std::fs::metadata(path).map_err(|e| Error::io(format!("--json-file {shown}"), e))?;
            if !meta.is_file() {
                return Err(Error::invalid(format!(
                    "--json-file {shown}: not a regular file (a pipe or device cannot be read twice): save it to a file first"
                )));
            }
            Ok((meta.len(), meta.modified().ok()))
        };
        let before = stamp()?;

        // Pass 1: validate everything, find duplicates (a 64-bit hash per id keeps memory small
        // for millions of tasks; hash collisions are settled exactly afterwards).
        // The file is read on a blocking thread; batches of ids come back to be checked against
        // the job in Redis as they are read, so memory stays bounded.
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<(usize, String)>>(2);
        let continue_on_error = self.continue_on_error;
        let uses_dependencies = job.spec.uses_task_dependencies == Some(true);
        let job_id = self.job_id.to_string();
        let pool_slots = self.store.get_pool(&pool).await?.spec.task_slots_per_node;
        let pool_id = pool.clone();
        let file = path.to_path_buf();
        let reader = tokio::task::spawn_blocking(move || {
            let mut seen: HashSet<u64> = HashSet::new();
            let mut collided: HashSet<u64> = HashSet::new();
            let mut bad: HashMap<usize, String> = HashMap::new();
            let mut graph: HashMap<String, Vec<String>> = HashMap::new();
            let mut batch: Vec<(usize, String)> = Vec::with_capacity(BATCH);
            let stopped = || Error::Internal("submission stopped".into());
            let (mut refused, mut problems) = (0usize, Vec::new());
            read_tasks(&file, |i, entry| {
                let checked = entry.and_then(|t| t.validate().map(|()| t)).and_then(|t| {
                    check_slots(&t, &pool_id, pool_slots)?;
                    let parents = t.parent_ids()?;
                    if !parents.is_empty() && !uses_dependencies {
                        return Err(Error::invalid(format!(
                            "task {:?}: dependsOn: job {job_id:?} does not set usesTaskDependencies",
                            t.id
                        )));
                    }
                    Ok((t, parents))
                });
                let t = match checked {
                    Ok((t, parents)) => {
                        if !parents.is_empty() {
                            graph.insert(t.id.clone(), parents);
                        }
                        t
                    }
                    Err(e) if continue_on_error => {
                        bad.insert(i, e.to_string());
                        return Ok(());
                    }
                    // Every bad task of the file is found (the first few named) before refusing it.
                    Err(e) => {
                        refused += 1;
                        if problems.len() < SHOWN_PROBLEMS {
                            problems.push(e.to_string());
                        }
                        return Ok(());
                    }
                };
                if !seen.insert(id_hash(&t.id)) {
                    collided.insert(id_hash(&t.id));
                }
                batch.push((i, t.id));
                if batch.len() == BATCH {
                    tx.blocking_send(std::mem::take(&mut batch)).map_err(|_| stopped())?;
                }
                Ok(())
            })?;
            if refused > 0 {
                return Err(refusal(refused, problems));
            }
            tx.blocking_send(batch).map_err(|_| stopped())?;
            // Tasks of the file that wait on each other would never run: refuse them.
            if let Some(cycle) = crate::model::task::dependency_cycles(&graph).first() {
                return Err(Error::invalid(format!("dependsOn: the tasks wait on each other: {}", cycle.join(" -> "))));
            }
            Ok::<_, Error>((bad, collided))
        });
        let mut existing: Vec<(usize, String)> = Vec::new();
        while let Some(chunk) = rx.recv().await {
            let ids: Vec<&str> = chunk.iter().map(|(_, id)| id.as_str()).collect();
            let found: HashSet<&str> = self.store.existing_tasks(self.job_id, &ids).await?.into_iter().collect();
            existing.extend(chunk.iter().filter(|(_, id)| found.contains(id.as_str())).cloned());
        }
        let (mut bad, collided) = reader.await.map_err(|e| Error::Internal(format!("task file reader: {e}")))??;
        let job_id = self.job_id;
        for (i, id) in existing {
            let e = format!("task {id:?} already exists in job {job_id:?}");
            if !self.continue_on_error {
                return Err(Error::invalid(e));
            }
            bad.insert(i, e);
        }
        if !collided.is_empty() {
            let mut by_hash: HashMap<u64, HashSet<String>> = HashMap::new();
            let mut dups: Vec<(usize, String)> = Vec::new();
            read_tasks(path, |i, entry| {
                let Ok(t) = entry else { return Ok(()) };
                let h = id_hash(&t.id);
                if collided.contains(&h) && !bad.contains_key(&i) && !by_hash.entry(h).or_default().insert(t.id.clone())
                {
                    dups.push((i, t.id));
                }
                Ok(())
            })?;
            for (i, id) in dups {
                let e = format!("task {id:?} appears more than once in {}", path.display());
                if !self.continue_on_error {
                    return Err(Error::invalid(e));
                }
                bad.insert(i, e);
            }
        }

        // Pass 2: write the records batch by batch, then publish their messages. Each task is
        // checked again as it is read, so a file changed meanwhile stores nothing unchecked.
        if stamp()? != before {
            return Err(Error::invalid(format!(
                "--json-file {shown}: the file changed while it was read; nothing was added"
            )));
        }
        let mut tasks: Vec<TaskAddParameter> = Vec::with_capacity(BATCH);
        let max_retry = job.spec.max_task_retry_count();
        let mut skipped: Vec<(usize, String)> = bad.into_iter().collect();
        skipped.sort();
        let bad_set: HashSet<usize> = skipped.iter().map(|(i, _)| *i).collect();
        // Reading is synchronous; batches are handed over one at a time to keep memory bounded.
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<TaskAddParameter>>(2);
        let (path_owned, pool_id) = (path.to_path_buf(), pool.clone());
        let reader = tokio::task::spawn_blocking(move || {
            let mut parents = 0usize;
            read_tasks(&path_owned, |i, entry| {
                if bad_set.contains(&i) {
                    return Ok(());
                }
                let changed = || {
                    Error::invalid(format!(
                        "--json-file {}: task #{} changed while the file was read; the tasks before it were added",
                        path_owned.display(),
                        i + 1
                    ))
                };
                let t = entry.map_err(|_| changed())?;
                t.validate().and_then(|()| check_slots(&t, &pool_id, pool_slots)).map_err(|_| changed())?;
                parents += t.depends_on.as_ref().map_or(0, |_| t.parent_ids().map_or(0, |p| p.len()));
                tasks.push(t);
                if tasks.len() == BATCH || parents >= BATCH_PARENTS {
                    parents = 0;
                    tx.blocking_send(std::mem::take(&mut tasks))
                        .map_err(|_| Error::Internal("submission stopped".into()))?;
                }
                Ok(())
            })?;
            if !tasks.is_empty() {
                tx.blocking_send(tasks).map_err(|_| Error::Internal("submission stopped".into()))?;
            }
            Ok::<_, Error>(())
        });
        let mut batches = Batches::new(self, &pool, job.spec.priority.unwrap_or(0), max_retry);
        while let Some(batch) = rx.recv().await {
            batches.add(&batch).await?;
            report.added += batch.len();
            (self.progress)(report.added);
        }
        batches.finish().await?;
        reader.await.map_err(|e| Error::Internal(format!("task file reader: {e}")))??;
        // The reasons name each task (its id or its place in the file).
        report.skipped = skipped.into_iter().map(|(i, reason)| (format!("#{}", i + 1), reason)).collect();
        Ok(report)
    }

    /// Adds tasks already in memory (e.g. one task from the command line): all or none.
    pub async fn add(&mut self, tasks: &[TaskAddParameter]) -> Result<AddReport> {
        let job = self.store.get_job(self.job_id).await?;
        let mut ids = HashSet::new();
        for t in tasks {
            t.validate()?;
            if !ids.insert(t.id.as_str()) {
                return Err(Error::invalid(format!("task {:?} appears more than once", t.id)));
            }
        }
        let uses_dependencies = job.spec.uses_task_dependencies == Some(true);
        let pool_slots = self.store.get_pool(&job.spec.pool_info.pool_id).await?.spec.task_slots_per_node;
        let mut graph = HashMap::new();
        for t in tasks {
            check_slots(t, &job.spec.pool_info.pool_id, pool_slots)?;
            let parents = t.parent_ids()?;
            if !parents.is_empty() {
                if !uses_dependencies {
                    return Err(Error::invalid(format!(
                        "task {:?}: dependsOn: job {:?} does not set usesTaskDependencies",
                        t.id, self.job_id
                    )));
                }
                graph.insert(t.id.clone(), parents);
            }
        }
        if let Some(cycle) = crate::model::task::dependency_cycles(&graph).first() {
            return Err(Error::invalid(format!("dependsOn: the tasks wait on each other: {}", cycle.join(" -> "))));
        }
        let pool = job.spec.pool_info.pool_id.clone();
        let mut batches = Batches::new(self, &pool, job.spec.priority.unwrap_or(0), job.spec.max_task_retry_count());
        for chunk in tasks.chunks(BATCH) {
            batches.add(chunk).await?;
        }
        batches.finish().await?;
        Ok(AddReport { added: tasks.len(), skipped: vec![] })
    }
}

type Publishing<'a> = std::pin::Pin<Box<dyn std::future::Future<Output = Result<()>> + Send + 'a>>;

/// A submission's batches: each is written to Redis in one script, whose outbox (the tasks
/// runnable now) is then published with confirms and cleared, overlapping the next batch's write.
struct Batches<'a> {
    store: &'a StatusStore,
    publisher: &'a Publisher,
    job: &'a str,
    pool: &'a str,
    priority: i32,
    max_retry: i32,
    /// Names this submission's outboxes (`<id>-<batch>`).
    id: String,
    count: usize,
    /// The earlier batches' outboxes being published, oldest first.
    publishing: futures_util::stream::FuturesOrdered<Publishing<'a>>,
}

impl<'a> Batches<'a> {
    fn new(submission: &Submission<'a>, pool: &'a str, priority: i32, max_retry: i32) -> Self {
        let id = format!("{:x}.{:x}", crate::model::now_ms(), std::process::id());
        Batches {
            store: submission.store,
            publisher: submission.publisher,
            job: submission.job_id,
            pool,
            priority,
            max_retry,
            id,
            count: 0,
            publishing: futures_util::stream::FuturesOrdered::new(),
        }
    }

    /// Writes one batch of records while earlier batches' outboxes are published (up to
    /// [`PUBLISHING`] of them waiting for their confirms); its own outbox joins them.
    async fn add(&mut self, batch: &[TaskAddParameter]) -> Result<()> {
        use futures_util::StreamExt;
        self.count += 1;
        let name = format!("{}-{}", self.id, self.count);
        let write = self.store.add_tasks(self.job, self.max_retry, self.priority, &name, batch);
        tokio::pin!(write);
        let outbox = loop {
            tokio::select! {
                outbox = &mut write => break outbox?,
                Some(published) = self.publishing.next() => published?,
            }
        };
        while self.publishing.len() >= PUBLISHING {
            if let Some(published) = self.publishing.next().await {
                published?;
            }
        }
        let (store, publisher, pool) = (self.store, self.publisher, self.pool);
        self.publishing.push_back(Box::pin(async move { publisher.publish_outbox(store, pool, &outbox).await }));
        Ok(())
    }

    /// Waits until every batch's messages are confirmed.
    async fn finish(mut self) -> Result<()> {
        use futures_util::StreamExt;
        while let Some(published) = self.publishing.next().await {
            published?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(content: &str) -> Result<Vec<String>> {
        // Tests run in parallel threads of one process: each call needs its own file.
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("drover-read-{}-{n}", std::process::id()));
        std::fs::write(&path, content).unwrap();
        let mut ids = vec![];
        let r = read_tasks(&path, |_, t| {
            ids.push(t?.id);
            Ok(())
        });
        std::fs::remove_file(&path).unwrap();
        r.map(|_| ids)
    }

    #[test]
    fn reads_every_format() {
        let one = r#"{"id":"a","commandLine":"x"}"#;
        assert_eq!(read(one).unwrap(), ["a"]);
        assert_eq!(read(&format!("[{one}, {}]", one.replace("\"a\"", "\"b\""))).unwrap(), ["a", "b"]);
        assert_eq!(read(&format!(" {{ \"value\": [{one}] }}")).unwrap(), ["a"]);
        assert_eq!(read(&format!("{one}\n{}\n", one.replace("\"a\"", "\"b\""))).unwrap(), ["a", "b"]);
    }

    #[test]
    fn malformed_json_says_where() {
        let err = read("{\"id\":\"a\",\"commandLine\":\"x\"}\n{\"id\": \"b\", \"commandLine\" \"y\"}\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 2 column"), "{err}");
        let err = read("[{\"id\":\"a\"}]").unwrap_err().to_string();
        assert!(err.contains("commandLine") && err.contains("line 1"), "{err}");
        assert!(read("  \n").is_err());
    }
}

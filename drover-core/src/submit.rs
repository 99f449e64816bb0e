//! Adding tasks to a job: reading task files and the all-or-nothing, confirmed submission.
//!
//! A task file is one TaskAddParameter, a JSON array of them, Azure's `{"value":[...]}`
//! collection, or JSON Lines, read as `az` reads it (`model::lenient`); it is streamed (64 KiB at
//! a time, each chunk's tasks parsed from memory), never held whole. Submission reads it twice:
//! first to validate every task (fields, duplicate ids in the file and in the job), then to write
//! the records to Redis in batches, each with its outbox of runnable tasks, which is published
//! with confirms and cleared. A file with one bad task adds none, unless the caller chose to skip
//! bad tasks.

use crate::model::{lenient, TaskAddParameter};
use crate::queue::Publisher;
use crate::status::StatusStore;
use crate::{Error, Result};
use serde_json::value::RawValue;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::hash::BuildHasher;
use std::io::Read;
use std::io::{BufRead, BufReader};
use std::path::Path;

/// Tasks per Redis write (one atomic script per batch).
const BATCH: usize = 500;
/// Batches whose messages may wait for their confirms at once while the next is written.
const PUBLISHING: usize = 2;
/// Parent ids per Redis write: a batch ends early when its tasks depend on this many.
const BATCH_PARENTS: usize = 20_000;

/// One entry of a task file: the task, or why it is not a valid task (naming where it is).
pub type Entry = Result<TaskAddParameter>;

/// Calls `each(index, entry)` for every task in the file, in order, streaming it. A JSON syntax
/// error stops the reading (with its line and column); a task with a bad field, or one that is
/// not valid, is handed to `each` as an error, so the caller decides whether to go on.
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
    let name = path.display().to_string();
    let mut count = 0usize;
    let shape = match first {
        None => return Err(Error::invalid(format!("{name}: the file holds no task"))),
        Some(b'[') => Shape::Array,
        Some(_) if collection => Shape::Collection,
        Some(_) => Shape::Stream,
    };
    read_values(reader, shape, CHUNK, |raw, start| {
        let nth = count + 1;
        let entry = match lenient::read_checked::<TaskAddParameter>("TaskAddParameter", raw.get(), Some(start)) {
            Ok((task, notes)) => {
                note_once(&name, notes);
                // A task that is not valid is named by its place in the file as well as its id.
                task.validate()
                    .map(|()| task)
                    .map_err(|e| Error::invalid(format!("{name}: task #{nth} (line {}): {e}", start.0)))
            }
            Err(e) => Err(Error::invalid(format!("{name}: task #{nth}: {e}"))),
        };
        each(count, entry)?;
        count += 1;
        Ok(())
    })
    .map_err(|e| match e {
        ReadError::Json(e) => Error::invalid(format!("{name}: {e}")),
        ReadError::Read(e) => Error::io(format!("read {name}"), e),
        ReadError::Stopped(e) => e,
    })?;
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

/// How much of a task file is read at a time (more while one task is longer).
const CHUNK: usize = 1 << 16;

/// How a task file holds its tasks.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Shape {
    /// JSON values one after another: JSON Lines, or one task.
    Stream,
    /// A JSON array of tasks.
    Array,
    /// Azure's task collection, `{"value": [tasks]}`.
    Collection,
}

/// What the reader expects next in a file of its [`Shape`].
#[derive(Clone, Copy, PartialEq, Debug)]
enum Step {
    /// The opening `[`, or a collection's `{`.
    Open,
    /// A collection's key, `"value"`.
    Key,
    Colon,
    /// A collection's `[`.
    Bracket,
    /// The first task of an array, or its end.
    First,
    /// A task after a comma.
    Value,
    /// A comma, or the array's end.
    Next,
    /// A collection's closing `}`.
    Brace,
    /// Nothing but whitespace.
    End,
    /// A task of a stream, or its end.
    Stream,
}

/// Why [`read_values`] stopped.
enum ReadError {
    /// Not JSON, or not a file of tasks: the reason, placed in the file.
    Json(String),
    Read(std::io::Error),
    /// The caller's `each` refused.
    Stopped(Error),
}

/// Calls `each(value, (line, column))` for every task of a file shaped `shape`, with where it
/// starts (1-based; the column in characters). The file is read `chunk` bytes at a time and
/// parsed from memory: serde_json reading from a `Read` asks for each byte on its own, which cost
/// a third of a million-task file's check.
fn read_values(
    mut reader: impl Read,
    shape: Shape,
    chunk: usize,
    mut each: impl FnMut(&RawValue, (usize, usize)) -> Result<()>,
) -> std::result::Result<(), ReadError> {
    let mut buf: Vec<u8> = Vec::with_capacity(2 * chunk);
    // Where buf[at] is in the file: `at` moves over what is parsed, and buf drops it.
    let mut place = Place { line: 1, bytes: 0, chars: 0 };
    let mut step = if shape == Shape::Stream { Step::Stream } else { Step::Open };
    let mut eof = false;
    loop {
        // Read at least `chunk` more, or as much again as an unfinished task holds (so a long
        // task is parsed again a bounded number of times).
        let want = buf.len().max(chunk);
        let mut got = 0;
        while got < want && !eof {
            let from = buf.len();
            buf.resize(from + (want - got), 0);
            let n = loop {
                match reader.read(&mut buf[from..]) {
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    r => break r,
                }
            };
            let n = n.map_err(ReadError::Read)?;
            buf.truncate(from + n);
            got += n;
            eof = n == 0;
        }
        let mut at = 0usize;
        loop {
            let blank = buf[at..].iter().take_while(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r')).count();
            place.advance(&buf[at..at + blank]);
            at += blank;
            let Some(&b) = buf.get(at) else {
                if !eof {
                    break;
                }
                let within = match step {
                    Step::Stream | Step::End => return Ok(()),
                    Step::First | Step::Value | Step::Next => "a list",
                    _ => "an object",
                };
                // serde_json places the end of its input after the last byte.
                return Err(ReadError::Json(format!(
                    "EOF while parsing {within} at line {} column {}",
                    place.line, place.bytes
                )));
            };
            // A task where one may be; a `]` after a comma is an error, below.
            if step == Step::Stream || (matches!(step, Step::First | Step::Value) && b != b']') {
                let mut values = serde_json::Deserializer::from_slice(&buf[at..]).into_iter::<&RawValue>();
                let v = match values.next() {
                    Some(Ok(v)) => v,
                    // A chunk's end cuts a task short: serde_json says so as the end of its
                    // input, or, for a number, as an invalid one at the end.
                    Some(Err(e)) if !eof && (e.is_eof() || at + error_offset(&buf[at..], &e) >= buf.len()) => break,
                    Some(Err(e)) => return Err(ReadError::Json(place.relocate(&e))),
                    None => return Err(place.error("expected a task")),
                };
                let end = at + values.byte_offset();
                // A value ending where the data read so far ends may go on (a number).
                if end == buf.len() && !eof {
                    break;
                }
                let start = (place.line, place.chars + 1);
                place.advance(&buf[at..end]);
                at = end;
                each(v, start).map_err(ReadError::Stopped)?;
                step = if step == Step::Stream { Step::Stream } else { Step::Next };
                continue;
            }
            let next = match (step, b) {
                (Step::Open, b'[') if shape == Shape::Array => Step::First,
                (Step::Open, b'{') if shape == Shape::Collection => Step::Key,
                (Step::Key, b'"') => {
                    const KEY: &[u8] = b"\"value\"";
                    if buf.len() - at < KEY.len() && !eof {
                        break;
                    }
                    if !buf[at..].starts_with(KEY) {
                        return Err(place.error("expected the key \"value\" (a task collection)"));
                    }
                    place.advance(&KEY[..KEY.len() - 1]);
                    at += KEY.len() - 1;
                    Step::Colon
                }
                (Step::Colon, b':') => Step::Bracket,
                (Step::Bracket, b'[') => Step::First,
                (Step::First | Step::Next, b']') if shape == Shape::Collection => Step::Brace,
                (Step::First | Step::Next, b']') => Step::End,
                (Step::Next, b',') => Step::Value,
                (Step::Brace, b'}') => Step::End,
                (Step::Value, _) => return Err(place.error("trailing comma")),
                (Step::Stream | Step::First, _) => return Err(place.error("expected a task")),
                (Step::Open | Step::Bracket, _) => return Err(place.error("expected `[`")),
                (Step::Key, _) => return Err(place.error("expected the key \"value\" (a task collection)")),
                (Step::Colon, _) => return Err(place.error("expected `:`")),
                (Step::Next, _) => return Err(place.error("expected `,` or `]`")),
                (Step::Brace, _) => return Err(place.error("expected `}` (a task collection holds only \"value\")")),
                (Step::End, _) => return Err(place.error("trailing characters")),
            };
            place.advance(&buf[at..at + 1]);
            at += 1;
            step = next;
        }
        buf.drain(..at);
    }
}

/// The byte of `text` at serde_json's error `e` (its line and byte column).
fn error_offset(text: &[u8], e: &serde_json::Error) -> usize {
    let line_start = match e.line() {
        0 | 1 => 0,
        n => text.iter().enumerate().filter(|(_, &b)| b == b'\n').nth(n - 2).map_or(text.len(), |(i, _)| i + 1),
    };
    line_start + e.column()
}

/// A place in a file: its line, and the bytes and characters before it on that line.
struct Place {
    line: usize,
    bytes: usize,
    chars: usize,
}

impl Place {
    /// Moves past `text`.
    fn advance(&mut self, text: &[u8]) {
        let chars = |t: &[u8]| t.iter().filter(|&&b| b & 0xC0 != 0x80).count();
        match text.iter().rposition(|&b| b == b'\n') {
            Some(last) => {
                self.line += text.iter().filter(|&&b| b == b'\n').count();
                self.bytes = text.len() - last - 1;
                self.chars = chars(&text[last + 1..]);
            }
            None => {
                self.bytes += text.len();
                self.chars += chars(text);
            }
        }
    }

    /// `message` at the byte here, placed as serde_json places its errors (the column in bytes).
    fn error(&self, message: &str) -> ReadError {
        ReadError::Json(format!("{message} at line {} column {}", self.line, self.bytes + 1))
    }

    /// serde_json's message for text parsed from here, with its line and column in the file.
    fn relocate(&self, e: &serde_json::Error) -> String {
        let text = e.to_string();
        let (line, column) = (e.line(), e.column());
        let Some(message) = text.strip_suffix(&format!(" at line {line} column {column}")) else { return text };
        let (line, column) = if line <= 1 { (self.line, self.bytes + column) } else { (self.line + line - 1, column) };
        format!("{message} at line {line} column {column}")
    }
}

/// Whether the buffered start of a file is `{ "value":` (Azure's task collection).
fn is_collection(head: &[u8]) -> bool {
    let rest = head.strip_prefix(b"{").unwrap_or(head);
    let rest = &rest[rest.iter().position(|b| !b.is_ascii_whitespace()).unwrap_or(rest.len())..];
    rest.starts_with(b"\"value\"")
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
                let checked = entry.and_then(|t| {
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
                check_slots(&t, &pool_id, pool_slots).map_err(|_| changed())?;
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

    /// Each value read, with where it starts.
    type Found = Vec<(String, (usize, usize))>;

    /// Every value of `text` with where it starts, or the error, read `chunk` bytes at a time.
    fn values(text: &str, shape: Shape, chunk: usize) -> std::result::Result<Found, String> {
        let mut seen = vec![];
        let read = read_values(text.as_bytes(), shape, chunk, |v, at| {
            seen.push((v.get().to_string(), at));
            Ok(())
        });
        match read {
            Ok(()) => Ok(seen),
            Err(ReadError::Json(e)) => Err(e),
            Err(_) => Err("stopped".into()),
        }
    }

    #[test]
    fn a_file_reads_the_same_whatever_its_chunks() {
        let good = "{\"id\":\"a\",\"commandLine\":\"é ü\"}\r\n  {\"id\":\"b\"} {\"id\":\"ç\"}\n{\n  \"id\": \"d\",\n  \"x\": [1, 2.5e3]\n}\n12345 \"€uro\" true\n\n";
        let whole = values(good, Shape::Stream, 1 << 20).unwrap();
        assert_eq!(whole.len(), 7);
        assert_eq!(whole[0].1, (1, 1));
        assert_eq!(whole[2], ("{\"id\":\"ç\"}".to_string(), (2, 14)));
        assert_eq!(whole[3].1, (3, 1));
        assert_eq!(whole[4], ("12345".to_string(), (7, 1)));
        assert_eq!(whole[5].1, (7, 7));
        let array = "\n [ {\"id\":\"ü\"},\n12,{\"id\":[\"b\"]}\t,\"x\" ]\n";
        let collection = format!("{{ \"value\" :{}}}", array.trim_end());
        let in_array = values(array, Shape::Array, 1 << 20).unwrap();
        let parsed: Vec<&RawValue> = serde_json::from_str(array).unwrap();
        assert_eq!(
            in_array.iter().map(|(v, _)| v.as_str()).collect::<Vec<_>>(),
            parsed.iter().map(|v| v.get()).collect::<Vec<_>>()
        );
        assert_eq!(in_array.iter().map(|(_, at)| *at).collect::<Vec<_>>(), [(2, 4), (3, 1), (3, 4), (3, 18)]);
        assert_eq!(values(&collection, Shape::Collection, 1 << 20).unwrap().len(), 4);
        for chunk in 1..good.len() + 2 {
            assert_eq!(values(good, Shape::Stream, chunk).unwrap(), whole, "chunk {chunk}");
            assert_eq!(values(array, Shape::Array, chunk).unwrap(), in_array, "chunk {chunk}");
        }
        // A syntax error is placed in the whole text, wherever the chunks end.
        for bad in [
            "{\"id\":\"a\"}\n{\"id\": \"b\", \"commandLine\" \"y\"}\n",
            "{\"id\":\"ä\"} {\"id\" 1}",
            "{\"id\":\"a\"}\n{\"id\":\n\"b\"",
            "{\"id\":\"a\"}\n12x",
        ] {
            let whole = serde_json::Deserializer::from_str(bad)
                .into_iter::<&RawValue>()
                .find_map(|v| v.err())
                .unwrap()
                .to_string();
            for chunk in 1..bad.len() + 2 {
                assert_eq!(values(bad, Shape::Stream, chunk).unwrap_err(), whole, "chunk {chunk} of {bad:?}");
            }
        }
        for (bad, shape, error) in [
            ("[{}, {} {}]", Shape::Array, "expected `,` or `]` at line 1 column 9"),
            ("[{},\n ]", Shape::Array, "trailing comma at line 2 column 2"),
            ("[{}] {}", Shape::Array, "trailing characters at line 1 column 6"),
            ("[{},\n {\"id\": x}]", Shape::Array, "expected value at line 2 column 9"),
            ("[{}, {}", Shape::Array, "EOF while parsing a list at line 1 column 7"),
            (
                "{\"value\": [{}], \"value\": []}",
                Shape::Collection,
                "expected `}` (a task collection holds only \"value\") at line 1 column 15",
            ),
            ("{\"value\" [{}]}", Shape::Collection, "expected `:` at line 1 column 10"),
            ("{\"value\": [{}]", Shape::Collection, "EOF while parsing an object at line 1 column 14"),
            ("{\"value\": [{}", Shape::Collection, "EOF while parsing a list at line 1 column 13"),
        ] {
            for chunk in 1..bad.len() + 2 {
                assert_eq!(values(bad, shape, chunk).unwrap_err(), error, "chunk {chunk} of {bad:?}");
            }
        }
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
        // A task that is not valid is placed in the file too.
        let err = read("{\"id\":\"a\",\"commandLine\":\"x\"}\n\n {\"id\":\"a/b\",\"commandLine\":\"y\"}\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("task #2 (line 3): task id \"a/b\""), "{err}");
    }
}

//! Reading Azure Batch JSON as `az` does: a leading byte-order mark, enum values in any case,
//! `null` for an absent field, and numbers and booleans written as strings are accepted; an
//! error names the path of the field at fault (`resourceFiles[1].fileMode`) and its line and
//! column. [`read_checked`] first checks a document against Azure's field table
//! (`model::fields`), reporting every problem at once.

use serde::de::{self, DeserializeOwned, DeserializeSeed, IntoDeserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserializer;
use serde_json::Value;
use std::fmt;

/// `text` without the UTF-8 byte-order mark some editors (and PowerShell) write first.
pub fn strip_bom(text: &str) -> &str {
    text.strip_prefix('\u{feff}').unwrap_or(text)
}

/// Reads `value` as a `T` with Azure's leniency.
pub fn from_value<T: DeserializeOwned>(value: Value) -> Result<T, LenientError> {
    T::deserialize(Lenient(value))
}

/// How many problems a refusal lists.
const MAX_PROBLEMS: usize = 20;

/// Reads `text`, a JSON document of Azure's `kind` (`TaskAddParameter`, ...) that starts at
/// `start` (line, column) of its file (unknown: problems are named by path only): checks it against
/// the field table, then reads it leniently.
/// The error lists every problem (up to 20), each with its line and column; the notes say which
/// fields were kept without effect (`path: why`).
pub fn read_checked<T: DeserializeOwned>(
    kind: &str,
    text: &str,
    start: Option<(usize, usize)>,
) -> Result<(T, Vec<String>), String> {
    let text = strip_bom(text);
    let value: Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
    let report = super::fields::check(kind, &value);
    // On its first line, a place is as far right as the document starts.
    let place = |path: &str| {
        let (first, indent) = start?;
        locate(text, path)
            .map(|(line, column)| (line + first - 1, if line == 1 { column + indent - 1 } else { column }))
    };
    let at = |path: &str| match place(path) {
        Some((line, column)) => format!("line {line} column {column}: {path}"),
        None => path.to_string(),
    };
    if !report.problems.is_empty() {
        let n = report.problems.len();
        // In the order they appear in the file.
        let mut problems: Vec<(Option<(usize, usize)>, &super::fields::Finding)> =
            report.problems.iter().map(|f| (place(&f.path), f)).collect();
        problems.sort_by_key(|(at, _)| *at);
        let mut listed: Vec<String> =
            problems.iter().take(MAX_PROBLEMS).map(|(_, f)| format!("{}: {}", at(&f.path), f.message)).collect();
        if n > MAX_PROBLEMS {
            listed.push(format!("and {} more", n - MAX_PROBLEMS));
        }
        let head = if n == 1 { String::new() } else { format!("{n} problems: ") };
        return Err(format!("{head}{}", listed.join("; ")));
    }
    let notes = report.kept.iter().map(|f| format!("{}: {}", f.path, f.message)).collect();
    match from_value(value) {
        Ok(read) => Ok((read, notes)),
        // A problem of the document as a whole (a missing field) is where the document starts.
        Err(e) if e.path.is_empty() => match start {
            Some((line, _)) => Err(format!("line {line}: {}", e.message)),
            None => Err(e.message),
        },
        Err(e) => Err(format!("{}: {}", at(&e.path()), e.message)),
    }
}

/// The line and column (1-based, in characters) where the member at `path` (`a.b[2].c`) of the
/// JSON document `text` starts (its name), or where the element `a[2]` starts.
pub fn locate(text: &str, path: &str) -> Option<(usize, usize)> {
    let mut scan = Scan { text: text.as_bytes(), i: 0, line: 1, column: 1, want: path, found: None };
    scan.value(String::new());
    scan.found
}

/// A scan of a JSON document (already known to be valid) for one member's position.
struct Scan<'a> {
    text: &'a [u8],
    i: usize,
    line: usize,
    column: usize,
    want: &'a str,
    found: Option<(usize, usize)>,
}

impl Scan<'_> {
    fn peek(&self) -> Option<u8> {
        self.text.get(self.i).copied()
    }

    fn bump(&mut self) -> Option<u8> {
        let c = self.peek()?;
        self.i += 1;
        if c == b'\n' {
            self.line += 1;
            self.column = 1;
        } else if c & 0xC0 != 0x80 {
            self.column += 1;
        }
        Some(c)
    }

    fn blank(&mut self) {
        while self.peek().is_some_and(|c| c.is_ascii_whitespace()) {
            self.bump();
        }
    }

    fn string(&mut self) -> String {
        let start = self.i;
        self.bump();
        while let Some(c) = self.bump() {
            match c {
                b'\\' => {
                    self.bump();
                }
                b'"' => break,
                _ => {}
            }
        }
        let raw = std::str::from_utf8(&self.text[start..self.i]).unwrap_or("\"\"");
        serde_json::from_str(raw).unwrap_or_default()
    }

    fn value(&mut self, path: String) {
        self.blank();
        if self.found.is_some() {
            return;
        }
        match self.peek() {
            Some(b'{') => {
                self.bump();
                loop {
                    self.blank();
                    if self.peek() != Some(b'"') {
                        self.bump();
                        return;
                    }
                    let at = (self.line, self.column);
                    let name = self.string();
                    let here = if path.is_empty() { name } else { format!("{path}.{name}") };
                    if here == self.want {
                        self.found = Some(at);
                        return;
                    }
                    self.blank();
                    self.bump(); // ':'
                    self.value(here);
                    self.blank();
                    if self.found.is_some() || self.bump() != Some(b',') {
                        return;
                    }
                }
            }
            Some(b'[') => {
                self.bump();
                for n in 0.. {
                    self.blank();
                    if self.peek() == Some(b']') {
                        self.bump();
                        return;
                    }
                    let here = format!("{path}[{n}]");
                    if here == self.want {
                        self.found = Some((self.line, self.column));
                        return;
                    }
                    self.value(here);
                    self.blank();
                    if self.found.is_some() || self.bump() != Some(b',') {
                        return;
                    }
                }
            }
            Some(b'"') => {
                self.string();
            }
            _ => {
                while self.peek().is_some_and(|c| !(c.is_ascii_whitespace() || b",]}".contains(&c))) {
                    self.bump();
                }
            }
        }
    }
}

/// What is wrong, and where: the path from the document's root to the field at fault.
#[derive(Debug)]
pub struct LenientError {
    path: Vec<String>,
    message: String,
}

impl LenientError {
    fn new(message: String) -> Self {
        LenientError { path: Vec::new(), message }
    }

    /// Adds the step `part` (a field name or `[index]`) in front of the path.
    fn within(mut self, part: String) -> Self {
        self.path.push(part);
        self
    }

    /// The path, as `a.b[2].c` (empty at the root).
    pub fn path(&self) -> String {
        let mut out = String::new();
        for part in self.path.iter().rev() {
            if !out.is_empty() && !part.starts_with('[') {
                out.push('.');
            }
            out.push_str(part);
        }
        out
    }
}

impl fmt::Display for LenientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.path() {
            path if path.is_empty() => f.write_str(&self.message),
            path => write!(f, "{path}: {}", self.message),
        }
    }
}

impl std::error::Error for LenientError {}

impl de::Error for LenientError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        LenientError::new(msg.to_string())
    }
}

/// A JSON value read leniently, its members and elements too.
struct Lenient(Value);

/// Reads the value as serde_json itself does, with this module's error type.
fn plain<'de, V: Visitor<'de>>(value: Value, visitor: V) -> Result<V::Value, LenientError> {
    // serde_json's own errors (invalid type, ...) and the visitor's, kept apart so the
    // visitor's keep their path.
    let mut inner = None;
    let relay = Relay { visitor, inner: &mut inner };
    value.deserialize_any(relay).map_err(|e| inner.take().unwrap_or_else(|| LenientError::new(e.to_string())))
}

/// A visitor passed through to serde_json's Value; the wrapped visitor's own errors are kept.
struct Relay<'a, V> {
    visitor: V,
    inner: &'a mut Option<LenientError>,
}

macro_rules! relay_scalar {
    ($($method:ident: $ty:ty),*) => {$(
        fn $method<E: de::Error>(self, v: $ty) -> Result<Self::Value, E> {
            self.visitor.$method::<LenientError>(v).map_err(|e| {
                let shown = e.to_string();
                *self.inner = Some(e);
                E::custom(shown)
            })
        }
    )*};
}

impl<'de, V: Visitor<'de>> Visitor<'de> for Relay<'_, V> {
    type Value = V::Value;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.visitor.expecting(f)
    }
    relay_scalar!(visit_bool: bool, visit_i64: i64, visit_u64: u64, visit_f64: f64, visit_str: &str, visit_string: String);
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        self.visitor.visit_unit::<LenientError>().map_err(|e| {
            let shown = e.to_string();
            *self.inner = Some(e);
            E::custom(shown)
        })
    }
}

macro_rules! numbers {
    ($($method:ident => $visit:ident: $ty:ty),*) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, LenientError> {
            match self.0 {
                Value::String(s) => match s.trim().parse::<$ty>() {
                    Ok(n) => visitor.$visit(n.into()),
                    Err(_) => plain(Value::String(s), visitor),
                },
                other => plain(other, visitor),
            }
        }
    )*};
}

impl<'de> Deserializer<'de> for Lenient {
    type Error = LenientError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, LenientError> {
        match self.0 {
            Value::Array(items) => visitor.visit_seq(Elements { items: items.into_iter(), index: 0 }),
            // A member set to null is a member left out.
            Value::Object(members) => {
                let members: Vec<(String, Value)> = members.into_iter().filter(|(_, v)| !v.is_null()).collect();
                visitor.visit_map(Members { members: members.into_iter(), value: None })
            }
            other => plain(other, visitor),
        }
    }

    numbers!(
        deserialize_i8 => visit_i64: i64, deserialize_i16 => visit_i64: i64, deserialize_i32 => visit_i64: i64,
        deserialize_i64 => visit_i64: i64, deserialize_u8 => visit_u64: u64, deserialize_u16 => visit_u64: u64,
        deserialize_u32 => visit_u64: u64, deserialize_u64 => visit_u64: u64, deserialize_f32 => visit_f64: f64,
        deserialize_f64 => visit_f64: f64
    );

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, LenientError> {
        match self.0 {
            Value::String(s) if s.trim().eq_ignore_ascii_case("true") => visitor.visit_bool(true),
            Value::String(s) if s.trim().eq_ignore_ascii_case("false") => visitor.visit_bool(false),
            other => plain(other, visitor),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, LenientError> {
        match self.0 {
            Value::Null => visitor.visit_none(),
            other => visitor.visit_some(Lenient(other)),
        }
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, LenientError> {
        match self.0 {
            Value::String(s) => {
                let name = variants.iter().find(|v| v.eq_ignore_ascii_case(s.trim())).map_or(s, |v| (*v).to_string());
                visitor.visit_enum(IntoDeserializer::<LenientError>::into_deserializer(name))
            }
            other => plain(other, visitor),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, LenientError> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, LenientError> {
        visitor.visit_unit()
    }

    serde::forward_to_deserialize_any! {
        char str string bytes byte_buf unit unit_struct seq tuple tuple_struct map struct identifier i128 u128
    }
}

/// An array's elements, each read leniently; an error says its index.
struct Elements {
    items: std::vec::IntoIter<Value>,
    index: usize,
}

impl<'de> SeqAccess<'de> for Elements {
    type Error = LenientError;
    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>, LenientError> {
        let Some(item) = self.items.next() else { return Ok(None) };
        let index = self.index;
        self.index += 1;
        seed.deserialize(Lenient(item)).map(Some).map_err(|e| e.within(format!("[{index}]")))
    }
    fn size_hint(&self) -> Option<usize> {
        Some(self.items.len())
    }
}

/// An object's members, each value read leniently; an error says the member's name.
struct Members {
    members: std::vec::IntoIter<(String, Value)>,
    value: Option<(String, Value)>,
}

impl<'de> MapAccess<'de> for Members {
    type Error = LenientError;
    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, LenientError> {
        let Some((key, value)) = self.members.next() else { return Ok(None) };
        let read = seed.deserialize(IntoDeserializer::<LenientError>::into_deserializer(key.clone()))?;
        self.value = Some((key, value));
        Ok(Some(read))
    }
    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, LenientError> {
        let (key, value) = self.value.take().ok_or_else(|| LenientError::new("a value without its key".into()))?;
        seed.deserialize(Lenient(value)).map_err(|e| e.within(key))
    }
    fn size_hint(&self) -> Option<usize> {
        Some(self.members.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::job::JobAddParameter;
    use crate::model::pool::PoolAddParameter;
    use crate::model::TaskAddParameter;

    fn from_str<T: DeserializeOwned>(text: &str) -> Result<T, LenientError> {
        let value: Value = serde_json::from_str(strip_bom(text)).map_err(|e| LenientError::new(e.to_string()))?;
        from_value(value)
    }

    #[test]
    fn reads_what_az_accepts() {
        let task: TaskAddParameter = from_str(
            "\u{feff}{\"id\":\"t\",\"commandLine\":\"true\",\"displayName\":null,\
             \"constraints\":{\"maxTaskRetryCount\":\"3\"},\"requiredSlots\":\"2\",\
             \"outputFiles\":[{\"filePattern\":\"o\",\"destination\":{\"container\":{\"containerUrl\":\"s3://b/p\"}},\
             \"uploadOptions\":{\"uploadCondition\":\"TaskSuccess\"}}]}",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(task.required_slots, Some(2));
        let job: JobAddParameter =
            from_str(r#"{"id":"j","poolInfo":{"poolId":"p"},"onAllTasksComplete":"TerminateJob","priority":"-5"}"#)
                .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(job.priority, Some(-5));
        let pool: PoolAddParameter =
            from_str(r#"{"id":"p","taskSlotsPerNode":"4","enableAutoScale":"false","vmSize":null}"#)
                .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((pool.task_slots_per_node, pool.enable_auto_scale), (4, Some(false)));
    }

    #[test]
    fn finds_where_a_member_is() {
        let text = "{\"a\": 1,\n \"b\": [ {\"c\": \"x\\\"y\"},\n  {\"é\": 2, \"d\": {\"e\": null}}]}";
        assert_eq!(locate(text, "a"), Some((1, 2)));
        assert_eq!(locate(text, "b[1]"), Some((3, 3)));
        assert_eq!(locate(text, "b[1].d.e"), Some((3, 18)));
        assert_eq!(locate(text, "b[0].c"), Some((2, 10)));
        assert_eq!(locate(text, "z"), None);
    }

    #[test]
    fn a_checked_read_lists_every_problem_with_its_place() {
        let text = "{\"id\": \"t\", \"commandLine\": \"x\",\n \"multiInstanceSettings\": {},\n \"affinityInfo\": {\"affinityId\": \"n\"},\n \"colour\": 1}";
        let e = read_checked::<TaskAddParameter>("TaskAddParameter", text, Some((10, 1))).err().unwrap_or_default();
        assert!(e.starts_with("2 problems: line 11 column 2: multiInstanceSettings: an Azure Batch feature"), "{e}");
        assert!(e.contains("; line 13 column 2: colour: unknown field"), "{e}");
        let text = "{\"id\": \"t\", \"commandLine\": \"x\",\n \"affinityInfo\": {\"affinityId\": \"n\"},\n \"requiredSlots\": \"two\"}";
        let e = read_checked::<TaskAddParameter>("TaskAddParameter", text, Some((1, 1))).err().unwrap_or_default();
        assert!(e.starts_with("line 3 column 2: requiredSlots: invalid type"), "{e}");
        let text = "{\"id\": \"t\", \"commandLine\": \"x\", \"affinityInfo\": {\"affinityId\": \"n\"}}";
        let (task, notes) =
            read_checked::<TaskAddParameter>("TaskAddParameter", text, Some((1, 1))).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(task.affinity_info, Some(serde_json::json!({"affinityId": "n"})));
        assert!(notes.len() == 1 && notes[0].starts_with("affinityInfo: has no effect"), "{notes:?}");
    }

    #[test]
    fn errors_name_the_path_of_the_field() {
        let bad = |json: &str| from_str::<TaskAddParameter>(json).err().map(|e| e.to_string()).unwrap_or_default();
        let e = bad(r#"{"id":"t","commandLine":"x","resourceFiles":[{"httpUrl":"h","filePath":"a"},{"filePath":7}]}"#);
        assert!(e.starts_with("resourceFiles[1].filePath: invalid type"), "{e}");
        let e = bad(r#"{"id":"t","commandLine":"x","constraints":{"maxTaskRetryCount":"many"}}"#);
        assert!(e.starts_with("constraints.maxTaskRetryCount: invalid type: string \"many\""), "{e}");
        let e = bad(r#"{"id":"t","commandLine":"x","bogus":1}"#);
        assert!(e.starts_with("unknown field `bogus`"), "{e}");
        let e = bad(
            r#"{"id":"t","commandLine":"x","outputFiles":[{"filePattern":"o","destination":{"container":{"containerUrl":"s3://b/p"}},"uploadOptions":{"uploadCondition":"sometimes"}}]}"#,
        );
        assert!(e.contains("uploadCondition") && e.contains("sometimes"), "{e}");
    }
}

//! The OData the Batch clients send: `$filter` (`eq ne gt ge lt le`, `and or not`, parentheses,
//! `startswith(prop, 'x')`; string, integer, boolean, `null` and datetime literals; properties
//! as paths, `executionInfo/result`), `$select`, and the conditional headers (`If-Match`,
//! `If-None-Match`, `If-Modified-Since`, `If-Unmodified-Since`), all over an entity's JSON.

use crate::reply::ApiError;
use axum::http::{HeaderMap, StatusCode};
use serde_json::Value;

/// A parsed `$filter`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Filter {
    Compare(String, Op, Literal),
    StartsWith(String, String),
    And(Box<Filter>, Box<Filter>),
    Or(Box<Filter>, Box<Filter>),
    Not(Box<Filter>),
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Op {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Literal {
    Text(String),
    Number(f64),
    Bool(bool),
    Null,
}

impl Filter {
    /// Parses `$filter`; the error names what is wrong and where.
    pub(crate) fn parse(text: &str) -> Result<Filter, ApiError> {
        let tokens = tokens(text).map_err(|e| bad(text, &e))?;
        let mut p = Parser { tokens, at: 0 };
        let filter = p.or().map_err(|e| bad(text, &e))?;
        if p.at < p.tokens.len() {
            return Err(bad(text, &format!("unexpected {:?}", p.tokens[p.at])));
        }
        Ok(filter)
    }

    /// Whether `entity` passes.
    pub(crate) fn matches(&self, entity: &Value) -> bool {
        match self {
            Filter::And(a, b) => a.matches(entity) && b.matches(entity),
            Filter::Or(a, b) => a.matches(entity) || b.matches(entity),
            Filter::Not(a) => !a.matches(entity),
            Filter::StartsWith(path, prefix) => lookup(entity, path)
                .and_then(Value::as_str)
                .is_some_and(|s| s.to_lowercase().starts_with(&prefix.to_lowercase())),
            Filter::Compare(path, op, literal) => compare(lookup(entity, path), *op, literal),
        }
    }
}

fn bad(text: &str, why: &str) -> ApiError {
    ApiError {
        values: vec![
            ("QueryParameterName".into(), "$filter".into()),
            ("QueryParameterValue".into(), text.into()),
            ("Reason".into(), why.into()),
        ],
        ..ApiError::new(StatusCode::BAD_REQUEST, "InvalidQueryParameterValue", format!("$filter is not valid: {why}"))
    }
}

/// The value at `path` (`a/b`) of `entity`.
fn lookup<'a>(entity: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('/').try_fold(entity, |v, key| v.get(key)).filter(|v| !v.is_null())
}

fn compare(value: Option<&Value>, op: Op, literal: &Literal) -> bool {
    use std::cmp::Ordering;
    let order: Option<Ordering> = match (value, literal) {
        (None, Literal::Null) => Some(Ordering::Equal),
        (Some(_), Literal::Null) | (None, _) => None,
        (Some(Value::Number(n)), Literal::Number(l)) => n.as_f64().and_then(|n| n.partial_cmp(l)),
        (Some(Value::Bool(b)), Literal::Bool(l)) => Some(b.cmp(l)),
        (Some(Value::String(s)), Literal::Text(l)) => {
            let time = |t: &str| chrono::DateTime::parse_from_rfc3339(t).ok();
            match (time(s), time(l)) {
                (Some(a), Some(b)) => Some(a.cmp(&b)),
                _ => Some(s.to_lowercase().cmp(&l.to_lowercase())),
            }
        }
        (Some(Value::String(s)), Literal::Number(l)) => s.parse::<f64>().ok().and_then(|n| n.partial_cmp(l)),
        _ => None,
    };
    match (op, order) {
        (Op::Ne, None) => !matches!(literal, Literal::Null) || value.is_some(),
        (_, None) => false,
        (Op::Eq, Some(o)) => o == Ordering::Equal,
        (Op::Ne, Some(o)) => o != Ordering::Equal,
        (Op::Gt, Some(o)) => o == Ordering::Greater,
        (Op::Ge, Some(o)) => o != Ordering::Less,
        (Op::Lt, Some(o)) => o == Ordering::Less,
        (Op::Le, Some(o)) => o != Ordering::Greater,
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Word(String),
    Text(String),
    Open,
    Close,
    Comma,
}

fn tokens(text: &str) -> Result<Vec<Token>, String> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            c if c.is_whitespace() => i += 1,
            '(' => {
                out.push(Token::Open);
                i += 1;
            }
            ')' => {
                out.push(Token::Close);
                i += 1;
            }
            ',' => {
                out.push(Token::Comma);
                i += 1;
            }
            '\'' => {
                let mut s = String::new();
                i += 1;
                loop {
                    match chars.get(i) {
                        None => return Err("a string is not closed".into()),
                        Some('\'') if chars.get(i + 1) == Some(&'\'') => {
                            s.push('\'');
                            i += 2;
                        }
                        Some('\'') => {
                            i += 1;
                            break;
                        }
                        Some(c) => {
                            s.push(*c);
                            i += 1;
                        }
                    }
                }
                out.push(Token::Text(s));
            }
            _ => {
                let start = i;
                while i < chars.len() && !matches!(chars[i], '(' | ')' | ',' | '\'') && !chars[i].is_whitespace() {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                // datetime'...' (and DateTime'...'): the string that follows is the literal.
                if word.eq_ignore_ascii_case("datetime") && chars.get(i) == Some(&'\'') {
                    continue;
                }
                out.push(Token::Word(word));
            }
        }
    }
    Ok(out)
}

struct Parser {
    tokens: Vec<Token>,
    at: usize,
}

impl Parser {
    fn next(&mut self) -> Option<Token> {
        let t = self.tokens.get(self.at).cloned();
        self.at += 1;
        t
    }

    fn keyword(&mut self, word: &str) -> bool {
        let hit = matches!(self.tokens.get(self.at), Some(Token::Word(w)) if w.eq_ignore_ascii_case(word));
        if hit {
            self.at += 1;
        }
        hit
    }

    fn or(&mut self) -> Result<Filter, String> {
        let mut left = self.and()?;
        while self.keyword("or") {
            left = Filter::Or(Box::new(left), Box::new(self.and()?));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Filter, String> {
        let mut left = self.unary()?;
        while self.keyword("and") {
            left = Filter::And(Box::new(left), Box::new(self.unary()?));
        }
        Ok(left)
    }

    fn unary(&mut self) -> Result<Filter, String> {
        if self.keyword("not") {
            return Ok(Filter::Not(Box::new(self.unary()?)));
        }
        match self.next() {
            Some(Token::Open) => {
                let inner = self.or()?;
                match self.next() {
                    Some(Token::Close) => Ok(inner),
                    _ => Err("a '(' is not closed".into()),
                }
            }
            Some(Token::Word(w)) if w.eq_ignore_ascii_case("startswith") => {
                let (
                    Some(Token::Open),
                    Some(Token::Word(path)),
                    Some(Token::Comma),
                    Some(Token::Text(prefix)),
                    Some(Token::Close),
                ) = (self.next(), self.next(), self.next(), self.next(), self.next())
                else {
                    return Err("startswith takes (property, 'text')".into());
                };
                Ok(Filter::StartsWith(path, prefix))
            }
            Some(Token::Word(path)) => {
                let op = match self.next() {
                    Some(Token::Word(op)) => match op.to_ascii_lowercase().as_str() {
                        "eq" => Op::Eq,
                        "ne" => Op::Ne,
                        "gt" => Op::Gt,
                        "ge" => Op::Ge,
                        "lt" => Op::Lt,
                        "le" => Op::Le,
                        other => return Err(format!("{other:?} is not a comparison (eq ne gt ge lt le)")),
                    },
                    other => return Err(format!("expected a comparison after {path:?}, found {other:?}")),
                };
                let literal = match self.next() {
                    Some(Token::Text(s)) => Literal::Text(s),
                    Some(Token::Word(w)) if w == "true" || w == "false" => Literal::Bool(w == "true"),
                    Some(Token::Word(w)) if w == "null" => Literal::Null,
                    Some(Token::Word(w)) => Literal::Number(w.parse().map_err(|_| format!("{w:?} is not a literal"))?),
                    other => return Err(format!("expected a literal after {path:?}, found {other:?}")),
                };
                Ok(Filter::Compare(path, op, literal))
            }
            other => Err(format!("expected a property, found {other:?}")),
        }
    }
}

/// `entity` with only the properties `$select` names (and its `odata.` annotations).
pub(crate) fn select(entity: Value, select: Option<&String>) -> Value {
    let (Some(select), Value::Object(members)) = (select, &entity) else { return entity };
    let wanted: Vec<&str> = select.split(',').map(|s| s.trim().split('/').next().unwrap_or("")).collect();
    Value::Object(
        members
            .iter()
            .filter(|(k, _)| k.starts_with("odata.") || wanted.iter().any(|w| w == k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    )
}

/// The conditional headers.
const CONDITIONAL: [&str; 4] = ["if-match", "if-none-match", "if-modified-since", "if-unmodified-since"];

/// [`conditions`] for a write: the entity (`current`) is read only when the request has a
/// conditional header.
pub(crate) async fn write_conditions(
    headers: &HeaderMap,
    current: impl std::future::Future<Output = Result<Value, ApiError>>,
) -> Result<(), ApiError> {
    if !CONDITIONAL.iter().any(|h| headers.contains_key(*h)) {
        return Ok(());
    }
    conditions(headers, &current.await?, false)
}

/// What the conditional headers say of `entity` (its `eTag` and `lastModified`): `Ok` to go
/// on; 304 for a read whose copy is current; 412 (`ConditionNotMet`) otherwise.
pub(crate) fn conditions(headers: &HeaderMap, entity: &Value, read: bool) -> Result<(), ApiError> {
    let header = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
    let tag = entity.get("eTag").and_then(Value::as_str).unwrap_or("");
    let tag_in = |list: &str| list.split(',').map(|t| t.trim().trim_matches('"')).any(|t| t == "*" || t == tag);
    let modified = entity
        .get("lastModified")
        .and_then(Value::as_str)
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.timestamp());
    let since = |n: &str| header(n).and_then(|d| chrono::DateTime::parse_from_rfc2822(d).ok()).map(|d| d.timestamp());
    let failed = || {
        ApiError::new(
            StatusCode::PRECONDITION_FAILED,
            "ConditionNotMet",
            "The condition specified using HTTP conditional header(s) is not met.",
        )
    };
    let unchanged = || ApiError::new(StatusCode::NOT_MODIFIED, "NotModified", "");
    if let Some(list) = header("if-match") {
        if !tag_in(list) {
            return Err(failed());
        }
    }
    if let Some(list) = header("if-none-match") {
        if tag_in(list) {
            return Err(if read { unchanged() } else { failed() });
        }
    }
    if let (Some(since), Some(modified)) = (since("if-unmodified-since"), modified) {
        if modified > since {
            return Err(failed());
        }
    }
    if let (Some(since), Some(modified)) = (since("if-modified-since"), modified) {
        if modified <= since {
            return Err(if read { unchanged() } else { failed() });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    #[test]
    fn filters_read_as_the_clients_write_them() {
        let task = json!({"id": "render-7", "state": "completed", "executionInfo": {"exitCode": 3, "result": "failure",
                          "endTime": "2026-12-04T09:00:00.000Z"}});
        for (filter, want) in [
            ("state eq 'completed'", true),
            ("state eq 'Completed'", true),
            ("state ne 'completed'", false),
            ("executionInfo/exitCode gt 2 and executionInfo/result eq 'failure'", true),
            ("executionInfo/exitCode lt 3", false),
            ("not (state eq 'active' or state eq 'running')", true),
            ("startswith(id, 'render-')", true),
            ("startswith(id, 'x') or executionInfo/endTime ge datetime'2026-12-01T00:00:00Z'", true),
            ("executionInfo/endTime lt '2026-12-04T08:59:59Z'", false),
            ("nodeInfo eq null", true),
            ("state eq 'it''s'", false),
        ] {
            assert_eq!(Filter::parse(filter).unwrap().matches(&task), want, "{filter}");
        }
        for bad in ["state eq", "state is 'x'", "(state eq 'a'", "startswith(id)", "state eq 'x", "state eq 'a' 'b'"] {
            let e = Filter::parse(bad).unwrap_err();
            assert_eq!((e.status, e.code), (StatusCode::BAD_REQUEST, "InvalidQueryParameterValue"), "{bad}");
        }
    }

    #[test]
    fn conditions_answer_as_azure_does() {
        let entity = json!({"eTag": "0xABC", "lastModified": "2026-12-04T09:00:00.000Z"});
        let with = |pairs: &[(&'static str, &str)]| {
            let mut h = HeaderMap::new();
            for (k, v) in pairs {
                h.insert(*k, v.parse().unwrap());
            }
            h
        };
        assert!(conditions(&with(&[("if-match", "0xABC")]), &entity, false).is_ok());
        assert_eq!(conditions(&with(&[("if-match", "0xDEF")]), &entity, false).unwrap_err().status, 412);
        assert_eq!(conditions(&with(&[("if-none-match", "0xABC")]), &entity, true).unwrap_err().status, 304);
        assert_eq!(conditions(&with(&[("if-none-match", "*")]), &entity, false).unwrap_err().status, 412);
        let before = "Fri, 04 Dec 2026 08:00:00 GMT";
        assert_eq!(conditions(&with(&[("if-unmodified-since", before)]), &entity, false).unwrap_err().status, 412);
        assert!(conditions(&with(&[("if-modified-since", before)]), &entity, true).is_ok());
        let after = "Fri, 04 Dec 2026 10:00:00 GMT";
        assert_eq!(conditions(&with(&[("if-modified-since", after)]), &entity, true).unwrap_err().status, 304);
    }

    #[test]
    fn select_keeps_what_is_named() {
        let e = json!({"odata.metadata": "m", "id": "t", "state": "active", "executionInfo": {"exitCode": 0}});
        let kept = select(e, Some(&"id, executionInfo/exitCode".to_string()));
        assert_eq!(kept, json!({"odata.metadata": "m", "id": "t", "executionInfo": {"exitCode": 0}}));
    }
}

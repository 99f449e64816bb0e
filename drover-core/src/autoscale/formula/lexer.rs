//! Formula tokens: numbers, strings, names, `$` service variables and punctuation, each with its position.

use super::{error, fmt_num, FormulaError, Pos};

const PUNCTS: &[&str] = &[
    "<=", ">=", "==", "!=", "&&", "||", "(", ")", ",", ";", "=", ".", "?", ":", "+", "-", "*", "/", "%", "!", "<", ">",
];

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Tok {
    Num(f64),
    Str(String),
    Ident(String),
    /// A `$name` service variable, stored without the `$`.
    Service(String),
    Punct(&'static str),
    Eof,
}

#[derive(Debug, Clone)]
pub(super) struct Token {
    pub(super) tok: Tok,
    pub(super) pos: Pos,
}

fn is_ident_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_'
}

fn scan_while(chars: &[char], mut i: usize, f: impl Fn(char) -> bool) -> usize {
    while chars.get(i).is_some_and(|&c| f(c)) {
        i += 1;
    }
    i
}

fn scan_ident(chars: &[char], i: usize) -> usize {
    scan_while(chars, i, |c| c.is_ascii_alphanumeric() || c == '_')
}

/// Scans `digits[.digits][(e|E)[+-]digits]`; a `.` or exponent not followed by digits is not consumed.
fn scan_number(chars: &[char], i: usize) -> usize {
    let digits = |i: usize| scan_while(chars, i, |c| c.is_ascii_digit());
    let mut i = digits(i);
    if chars.get(i) == Some(&'.') && digits(i + 1) > i + 1 {
        i = digits(i + 1);
    }
    if matches!(chars.get(i), Some('e' | 'E')) {
        let j = if matches!(chars.get(i + 1), Some('+' | '-')) { i + 2 } else { i + 1 };
        if digits(j) > j {
            i = digits(j);
        }
    }
    i
}

fn punct_at(chars: &[char], i: usize) -> Option<&'static str> {
    PUNCTS.iter().copied().find(|p| p.chars().enumerate().all(|(k, c)| chars.get(i + k) == Some(&c)))
}

pub(super) fn tokenize(src: &str) -> Result<Vec<Token>, FormulaError> {
    let chars: Vec<char> = src.chars().collect();
    let mut tokens = Vec::new();
    let (mut i, mut line, mut column) = (0, 1, 1);
    while let Some(&c) = chars.get(i) {
        let pos = Pos { line, column };
        if c == '\n' {
            (i, line, column) = (i + 1, line + 1, 1);
            continue;
        }
        if c.is_whitespace() {
            (i, column) = (i + 1, column + 1);
            continue;
        }
        if c == '/' && chars.get(i + 1) == Some(&'/') {
            let end = scan_while(&chars, i, |c| c != '\n');
            (i, column) = (end, column + end - i);
            continue;
        }
        let start = i;
        let tok = if c.is_ascii_digit() {
            i = scan_number(&chars, i);
            let text: String = chars[start..i].iter().collect();
            match text.parse::<f64>() {
                Ok(n) if n.is_finite() => Tok::Num(n),
                _ => return Err(error(pos, format!("invalid number '{text}'"))),
            }
        } else if is_ident_start(c) {
            i = scan_ident(&chars, i);
            Tok::Ident(chars[start..i].iter().collect())
        } else if c == '$' {
            if !chars.get(i + 1).is_some_and(|&c| is_ident_start(c)) {
                return Err(error(pos, "expected a variable name after '$'"));
            }
            i = scan_ident(&chars, i + 1);
            Tok::Service(chars[start + 1..i].iter().collect())
        } else if c == '"' {
            match chars[i + 1..].iter().position(|&c| c == '"' || c == '\n') {
                Some(n) if chars.get(i + 1 + n) == Some(&'"') => {
                    i += n + 2;
                    Tok::Str(chars[start + 1..i - 1].iter().collect())
                }
                _ => return Err(error(pos, "unterminated string literal")),
            }
        } else if let Some(p) = punct_at(&chars, i) {
            i += p.len();
            Tok::Punct(p)
        } else {
            return Err(error(pos, format!("unexpected character {c:?}")));
        };
        column += i - start;
        tokens.push(Token { tok, pos });
    }
    tokens.push(Token { tok: Tok::Eof, pos: Pos { line, column } });
    Ok(tokens)
}

pub(super) fn describe_tok(tok: &Tok) -> String {
    match tok {
        Tok::Num(n) => format!("number {}", fmt_num(*n)),
        Tok::Str(s) => format!("string \"{s}\""),
        Tok::Ident(s) => format!("'{s}'"),
        Tok::Service(s) => format!("'${s}'"),
        Tok::Punct(p) => format!("'{p}'"),
        Tok::Eof => "end of formula".to_string(),
    }
}

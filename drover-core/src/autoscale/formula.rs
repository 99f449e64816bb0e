//! Autoscale formula interpreter: owns tokenizing, parsing and evaluating drover's subset of the Azure Batch
//! autoscale formula language (assignments, arithmetic, time intervals, built-in functions, sample variables).

use std::collections::{HashMap, HashSet};
use std::fmt;

/// Maximum nesting of sub-expressions (parentheses, call arguments, ternary branches) accepted by the parser.
const MAX_NESTING: usize = 64;
/// Maximum height of an expression tree; bounds evaluator recursion for inputs such as `1+1+1+...`.
const MAX_HEIGHT: usize = 256;
const DEALLOCATION_OPTIONS: [&str; 4] = ["requeue", "terminate", "taskcompletion", "retaineddata"];
const PUNCTS: &[&str] = &[
    "<=", ">=", "==", "!=", "&&", "||", "(", ")", ",", ";", "=", ".", "?", ":", "+", "-", "*", "/", "%", "!", "<", ">",
];

// ---- Public API ----

/// A parse or evaluation error with the 1-based position of the offending token or expression.
#[derive(Debug, Clone, PartialEq)]
pub struct FormulaError {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl fmt::Display for FormulaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}, column {}: {}", self.line, self.column, self.message)
    }
}

impl std::error::Error for FormulaError {}

/// A formula value. `Interval` holds seconds.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Number(f64),
    Vector(Vec<f64>),
    Str(String),
    Interval(f64),
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Number(n) => f.write_str(&fmt_num(*n)),
            Value::Vector(xs) => {
                let items: Vec<String> = xs.iter().map(|x| fmt_num(*x)).collect();
                write!(f, "[{}]", items.join(", "))
            }
            Value::Str(s) => f.write_str(s),
            Value::Interval(secs) => write!(f, "{}s", fmt_num(*secs)),
        }
    }
}

/// Everything a formula can read: the clock, sample series and plain service variables.
#[derive(Debug, Clone, Default)]
pub struct Inputs {
    pub now: f64,
    pub sample_period: f64,
    pub series: HashMap<String, Vec<(f64, f64)>>,
    pub variables: HashMap<String, f64>,
}

/// The outcome of evaluating a formula.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Evaluation {
    pub assignments: Vec<(String, Value)>,
    pub target_dedicated_nodes: Option<f64>,
    pub node_deallocation_option: Option<String>,
}

/// A parsed autoscale formula.
#[derive(Debug, Clone)]
pub struct Formula {
    statements: Vec<Stmt>,
    user_targets: HashSet<String>,
}

impl Formula {
    /// Parses `source`, rejecting syntax errors, unknown functions/methods and wrong argument counts.
    pub fn parse(source: &str) -> Result<Formula, FormulaError> {
        let tokens = tokenize(source)?;
        let eof = tokens.last().cloned().unwrap_or(Token { tok: Tok::Eof, pos: Pos { line: 1, column: 1 } });
        let mut parser = Parser { tokens, at: 0, nesting: 0, eof };
        let statements = parser.parse_statements()?;
        let user_targets = statements.iter().filter(|s| !s.target.starts_with('$')).map(|s| s.target.clone()).collect();
        Ok(Formula { statements, user_targets })
    }

    /// Runs the statements in order against `inputs`, stopping at the first evaluation error.
    pub fn evaluate(&self, inputs: &Inputs) -> Result<Evaluation, FormulaError> {
        let mut ev =
            Evaluator { inputs, user_targets: &self.user_targets, users: HashMap::new(), services: HashMap::new() };
        let mut out = Evaluation::default();
        for stmt in &self.statements {
            let value = ev.eval(&stmt.expr)?;
            let bad = |what: &str| {
                let msg = format!("{} must be {what}, got {}", stmt.target, describe(&value));
                Err(error(stmt.expr.pos, msg))
            };
            match (stmt.target.as_str(), &value) {
                ("$TargetDedicatedNodes", Value::Number(n)) if n.is_finite() && *n >= 0.0 => {
                    out.target_dedicated_nodes = Some(*n)
                }
                ("$TargetDedicatedNodes", _) => return bad("a non-negative number"),
                ("$NodeDeallocationOption", Value::Str(s)) if DEALLOCATION_OPTIONS.contains(&s.as_str()) => {
                    out.node_deallocation_option = Some(s.clone())
                }
                ("$NodeDeallocationOption", _) => return bad(&format!("one of {}", DEALLOCATION_OPTIONS.join(", "))),
                _ => {}
            }
            match stmt.target.strip_prefix('$') {
                Some(name) => ev.services.insert(name.to_string(), value.clone()),
                None => ev.users.insert(stmt.target.clone(), value.clone()),
            };
            out.assignments.push((stmt.target.clone(), value));
        }
        Ok(out)
    }
}

// ---- Tokenizer ----

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Pos {
    line: usize,
    column: usize,
}

fn error(pos: Pos, message: impl Into<String>) -> FormulaError {
    FormulaError { line: pos.line, column: pos.column, message: message.into() }
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Num(f64),
    Str(String),
    Ident(String),
    /// A `$name` service variable, stored without the `$`.
    Service(String),
    Punct(&'static str),
    Eof,
}

#[derive(Debug, Clone)]
struct Token {
    tok: Tok,
    pos: Pos,
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

fn tokenize(src: &str) -> Result<Vec<Token>, FormulaError> {
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

fn describe_tok(tok: &Tok) -> String {
    match tok {
        Tok::Num(n) => format!("number {}", fmt_num(*n)),
        Tok::Str(s) => format!("string \"{s}\""),
        Tok::Ident(s) => format!("'{s}'"),
        Tok::Service(s) => format!("'${s}'"),
        Tok::Punct(p) => format!("'{p}'"),
        Tok::Eof => "end of formula".to_string(),
    }
}

// ---- AST and parser ----

#[derive(Debug, Clone)]
struct Stmt {
    target: String,
    expr: Expr,
}

/// An expression node; `pos` is where the expression starts.
#[derive(Debug, Clone)]
struct Expr {
    kind: ExprKind,
    pos: Pos,
    height: usize,
}

/// Operators are kept as their source symbols (`"+"`, `"&&"`, unary `"-"`); names are validated while parsing.
#[derive(Debug, Clone)]
enum ExprKind {
    Number(f64),
    Str(String),
    Var(String),
    Service(String),
    Unary(&'static str, Box<Expr>),
    /// The `Pos` is the operator's, used for errors raised by the operator itself.
    Binary(&'static str, Pos, Box<Expr>, Box<Expr>),
    Ternary(Box<Expr>, Box<Expr>, Box<Expr>),
    Call(String, Vec<Expr>),
    /// `$var.Method(args)`: variable name without `$`, method name, arguments.
    Method(String, String, Vec<Expr>),
}

/// Precedence of a binary operator (higher binds tighter).
fn precedence(op: &str) -> Option<u8> {
    Some(match op {
        "||" => 1,
        "&&" => 2,
        "==" | "!=" => 3,
        "<" | "<=" | ">" | ">=" => 4,
        "+" | "-" => 5,
        "*" | "/" | "%" => 6,
        _ => return None,
    })
}

/// Minimum and maximum argument counts of the built-in functions.
fn function_arity(name: &str) -> Option<(usize, usize)> {
    match name {
        "min" | "max" | "avg" | "sum" | "len" | "count" | "std" => Some((1, usize::MAX)),
        "round" | "ceil" | "floor" | "lg" | "ln" => Some((1, 1)),
        "percentile" | "val" => Some((2, 2)),
        _ => None,
    }
}

/// Minimum and maximum argument counts of the sample-variable methods.
fn method_arity(name: &str) -> Option<(usize, usize)> {
    match name {
        "GetSample" => Some((1, 2)),
        "GetSamplePercent" => Some((1, 1)),
        "Count" | "GetSamplePeriod" => Some((0, 0)),
        _ => None,
    }
}

fn check_arity(name: &str, min: usize, max: usize, got: usize, pos: Pos) -> Result<(), FormulaError> {
    if (min..=max).contains(&got) {
        return Ok(());
    }
    let expected = match (min, max) {
        _ if min == max => min.to_string(),
        (_, usize::MAX) => format!("at least {min}"),
        _ => format!("{min} to {max}"),
    };
    Err(error(pos, format!("{name} expects {expected} argument(s), got {got}")))
}

/// Builds a node, computing its height and rejecting trees too tall to evaluate safely.
fn node(kind: ExprKind, pos: Pos) -> Result<Expr, FormulaError> {
    let child_height = match &kind {
        ExprKind::Unary(_, e) => e.height,
        ExprKind::Binary(_, _, l, r) => l.height.max(r.height),
        ExprKind::Ternary(c, t, f) => c.height.max(t.height).max(f.height),
        ExprKind::Call(_, args) | ExprKind::Method(_, _, args) => args.iter().map(|a| a.height).max().unwrap_or(0),
        _ => 0,
    };
    if child_height >= MAX_HEIGHT {
        return Err(error(pos, format!("expression too complex (more than {MAX_HEIGHT} levels)")));
    }
    Ok(Expr { kind, pos, height: child_height + 1 })
}

struct Parser {
    tokens: Vec<Token>,
    at: usize,
    nesting: usize,
    eof: Token,
}

impl Parser {
    fn peek(&self) -> &Token {
        self.tokens.get(self.at).unwrap_or(&self.eof)
    }

    fn advance(&mut self) -> Token {
        let t = self.peek().clone();
        self.at += 1;
        t
    }

    fn is_punct(&self, p: &str) -> bool {
        matches!(self.peek().tok, Tok::Punct(q) if q == p)
    }

    fn eat(&mut self, p: &str) -> bool {
        let found = self.is_punct(p);
        if found {
            self.at += 1;
        }
        found
    }

    fn expect_punct(&mut self, p: &str, context: &str) -> Result<Pos, FormulaError> {
        if self.is_punct(p) {
            return Ok(self.advance().pos);
        }
        let t = self.peek();
        Err(error(t.pos, format!("expected '{p}' {context}, found {}", describe_tok(&t.tok))))
    }

    fn parse_statements(&mut self) -> Result<Vec<Stmt>, FormulaError> {
        let mut statements = Vec::new();
        loop {
            while self.eat(";") {}
            let t = self.advance();
            let target = match t.tok {
                Tok::Eof => return Ok(statements),
                Tok::Ident(name) => name,
                Tok::Service(name) => format!("${name}"),
                other => {
                    let msg = format!("expected a variable name to assign to, found {}", describe_tok(&other));
                    return Err(error(t.pos, msg));
                }
            };
            self.expect_punct("=", &format!("after '{target}'"))?;
            let expr = self.parse_expr()?;
            if !self.is_punct(";") && self.peek().tok != Tok::Eof {
                let t = self.peek();
                return Err(error(t.pos, format!("expected ';' or end of formula, found {}", describe_tok(&t.tok))));
            }
            statements.push(Stmt { target, expr });
        }
    }

    /// Every nested expression goes through here, so parser recursion is bounded by `MAX_NESTING`.
    fn parse_expr(&mut self) -> Result<Expr, FormulaError> {
        if self.nesting >= MAX_NESTING {
            return Err(error(self.peek().pos, format!("expression nested too deeply (limit {MAX_NESTING})")));
        }
        self.nesting += 1;
        let result = self.parse_ternary();
        self.nesting -= 1;
        result
    }

    fn parse_ternary(&mut self) -> Result<Expr, FormulaError> {
        let cond = self.parse_binary(1)?;
        if !self.eat("?") {
            return Ok(cond);
        }
        let then = self.parse_expr()?;
        self.expect_punct(":", "in conditional expression")?;
        let otherwise = self.parse_expr()?;
        let pos = cond.pos;
        node(ExprKind::Ternary(Box::new(cond), Box::new(then), Box::new(otherwise)), pos)
    }

    /// Precedence climbing: parses operators binding at least as tightly as `min_prec`, left-associatively.
    fn parse_binary(&mut self, min_prec: u8) -> Result<Expr, FormulaError> {
        let mut lhs = self.parse_unary()?;
        while let Some((op, prec)) = self.peek_binop().filter(|(_, prec)| *prec >= min_prec) {
            let op_pos = self.advance().pos;
            let rhs = self.parse_binary(prec + 1)?;
            let pos = lhs.pos;
            lhs = node(ExprKind::Binary(op, op_pos, Box::new(lhs), Box::new(rhs)), pos)?;
        }
        Ok(lhs)
    }

    fn peek_binop(&self) -> Option<(&'static str, u8)> {
        match self.peek().tok {
            Tok::Punct(op) => precedence(op).map(|prec| (op, prec)),
            _ => None,
        }
    }

    fn parse_unary(&mut self) -> Result<Expr, FormulaError> {
        let mut ops = Vec::new();
        while let Tok::Punct(op @ ("-" | "!")) = self.peek().tok {
            let pos = self.advance().pos;
            if ops.len() >= MAX_HEIGHT {
                return Err(error(pos, "too many unary operators"));
            }
            ops.push((op, pos));
        }
        let mut expr = self.parse_primary()?;
        for (op, pos) in ops.into_iter().rev() {
            expr = node(ExprKind::Unary(op, Box::new(expr)), pos)?;
        }
        Ok(expr)
    }

    fn parse_primary(&mut self) -> Result<Expr, FormulaError> {
        let t = self.advance();
        match t.tok {
            Tok::Num(n) => node(ExprKind::Number(n), t.pos),
            Tok::Str(s) => node(ExprKind::Str(s), t.pos),
            Tok::Ident(name) if self.is_punct("(") => {
                let Some((min, max)) = function_arity(&name) else {
                    return Err(error(t.pos, format!("unknown function '{name}'")));
                };
                let args = self.parse_args(&name)?;
                check_arity(&name, min, max, args.len(), t.pos)?;
                node(ExprKind::Call(name, args), t.pos)
            }
            Tok::Ident(name) => node(ExprKind::Var(name), t.pos),
            Tok::Service(name) if self.is_punct(".") => {
                self.advance();
                let m = self.advance();
                let Tok::Ident(method_name) = m.tok else {
                    return Err(error(m.pos, format!("expected a method name, found {}", describe_tok(&m.tok))));
                };
                let Some((min, max)) = method_arity(&method_name) else {
                    return Err(error(m.pos, format!("unknown method '{method_name}' on ${name}")));
                };
                let args = self.parse_args(&method_name)?;
                check_arity(&format!("${name}.{method_name}"), min, max, args.len(), m.pos)?;
                node(ExprKind::Method(name, method_name, args), t.pos)
            }
            Tok::Service(name) => node(ExprKind::Service(name), t.pos),
            Tok::Punct("(") => {
                let inner = self.parse_expr()?;
                self.expect_punct(")", "to close '('")?;
                Ok(inner)
            }
            other => Err(error(t.pos, format!("expected an expression, found {}", describe_tok(&other)))),
        }
    }

    /// Parses a parenthesised, comma-separated argument list following `callee`.
    fn parse_args(&mut self, callee: &str) -> Result<Vec<Expr>, FormulaError> {
        self.expect_punct("(", &format!("after '{callee}'"))?;
        let mut args = Vec::new();
        if self.eat(")") {
            return Ok(args);
        }
        loop {
            args.push(self.parse_expr()?);
            if !self.eat(",") {
                self.expect_punct(")", "or ',' in argument list")?;
                return Ok(args);
            }
        }
    }
}

// ---- Evaluator ----

fn fmt_num(n: f64) -> String {
    (n + 0.0).to_string() // `+ 0.0` turns -0 into 0
}

fn describe(v: &Value) -> String {
    match v {
        Value::Str(s) => format!("\"{s}\""),
        other => other.to_string(),
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Number(_) => "a number",
        Value::Vector(_) => "a vector",
        Value::Str(_) => "a string",
        Value::Interval(_) => "a time interval",
    }
}

fn time_constant(name: &str) -> Option<f64> {
    Some(match name {
        "TimeInterval_Zero" => 0.0,
        "TimeInterval_Second" => 1.0,
        "TimeInterval_Minute" => 60.0,
        "TimeInterval_Hour" => 3600.0,
        "TimeInterval_Day" => 86_400.0,
        "TimeInterval_Week" => 604_800.0,
        _ => return None,
    })
}

fn finite(x: f64, pos: Pos, what: &str) -> Result<f64, FormulaError> {
    Some(x).filter(|x| x.is_finite()).ok_or_else(|| error(pos, format!("{what}: result is not a finite number")))
}

fn truth(b: bool) -> f64 {
    f64::from(u8::from(b))
}

/// Applies a binary operator to two numbers.
fn apply(op: &str, x: f64, y: f64, pos: Pos) -> Result<f64, FormulaError> {
    let r = match op {
        "+" => x + y,
        "-" => x - y,
        "*" => x * y,
        "/" | "%" if y == 0.0 => return Err(error(pos, "division by zero")),
        "/" => x / y,
        "%" => x % y,
        "<" => truth(x < y),
        "<=" => truth(x <= y),
        ">" => truth(x > y),
        ">=" => truth(x >= y),
        "==" => truth(x == y),
        "!=" => truth(x != y),
        "&&" => truth(x != 0.0 && y != 0.0),
        "||" => truth(x != 0.0 || y != 0.0),
        _ => return Err(error(pos, format!("unknown operator '{op}'"))),
    };
    finite(r, pos, &format!("'{op}'"))
}

fn binary(op: &str, a: Value, b: Value, pos: Pos) -> Result<Value, FormulaError> {
    use Value::{Interval, Number, Str, Vector};
    let each = |xs: Vec<f64>, f: &dyn Fn(f64) -> Result<f64, FormulaError>| {
        xs.into_iter().map(f).collect::<Result<Vec<f64>, _>>()
    };
    match (op, a, b) {
        (_, Number(x), Number(y)) => apply(op, x, y, pos).map(Number),
        ("==" | "!=", Str(x), Str(y)) => Ok(Number(truth((x == y) == (op == "==")))),
        ("+" | "-" | "*" | "/" | "%", Vector(xs), Number(y)) => each(xs, &|x| apply(op, x, y, pos)).map(Vector),
        ("+" | "-" | "*" | "/" | "%", Number(x), Vector(ys)) => each(ys, &|y| apply(op, x, y, pos)).map(Vector),
        ("*" | "/", Interval(x), Number(y)) | ("*", Number(y), Interval(x)) => apply(op, x, y, pos).map(Interval),
        ("+" | "-", Interval(x), Interval(y)) => apply(op, x, y, pos).map(Interval),
        (_, a, b) => Err(error(pos, format!("cannot apply '{op}' to {} and {}", type_name(&a), type_name(&b)))),
    }
}

fn unary(op: &str, v: Value, pos: Pos) -> Result<Value, FormulaError> {
    match (op, v) {
        ("-", Value::Number(x)) => Ok(Value::Number(-x)),
        ("-", Value::Vector(xs)) => Ok(Value::Vector(xs.into_iter().map(|x| -x).collect())),
        ("-", Value::Interval(x)) => Ok(Value::Interval(-x)),
        ("!", Value::Number(x)) => Ok(Value::Number(truth(x == 0.0))),
        (_, v) => Err(error(pos, format!("cannot apply unary '{op}' to {}", type_name(&v)))),
    }
}

/// Flattens numbers and vectors into one list of numbers.
fn flatten(name: &str, args: &[(Value, Pos)]) -> Result<Vec<f64>, FormulaError> {
    let mut out = Vec::new();
    for (v, pos) in args {
        match v {
            Value::Number(x) => out.push(*x),
            Value::Vector(xs) => out.extend_from_slice(xs),
            other => return Err(error(*pos, format!("{name}: expected numbers or vectors, got {}", type_name(other)))),
        }
    }
    Ok(out)
}

fn number_arg(name: &str, arg: Option<&(Value, Pos)>, pos: Pos) -> Result<(f64, Pos), FormulaError> {
    match arg {
        Some((Value::Number(x), p)) => Ok((*x, *p)),
        Some((other, p)) => Err(error(*p, format!("{name}: expected a number, got {}", type_name(other)))),
        None => Err(error(pos, format!("{name}: missing argument"))),
    }
}

fn call(name: &str, args: &[(Value, Pos)], pos: Pos) -> Result<Value, FormulaError> {
    let nonempty = |xs: Vec<f64>| {
        Some(xs).filter(|xs| !xs.is_empty()).ok_or_else(|| error(pos, format!("{name}: no values to aggregate")))
    };
    let elementwise = |f: fn(f64) -> f64| match args.first() {
        Some((Value::Number(x), p)) => finite(f(*x), *p, name).map(Value::Number),
        Some((Value::Vector(xs), p)) => {
            xs.iter().map(|x| finite(f(*x), *p, name)).collect::<Result<_, _>>().map(Value::Vector)
        }
        Some((other, p)) => Err(error(*p, format!("{name}: expected a number or vector, got {}", type_name(other)))),
        None => Err(error(pos, format!("{name}: missing argument"))),
    };
    let result = match name {
        "len" | "count" => flatten(name, args)?.len() as f64,
        "sum" => flatten(name, args)?.iter().sum(),
        "min" => nonempty(flatten(name, args)?)?.into_iter().fold(f64::INFINITY, f64::min),
        "max" => nonempty(flatten(name, args)?)?.into_iter().fold(f64::NEG_INFINITY, f64::max),
        "avg" => {
            let xs = nonempty(flatten(name, args)?)?;
            xs.iter().sum::<f64>() / xs.len() as f64
        }
        "std" => {
            let xs = nonempty(flatten(name, args)?)?;
            let mean = xs.iter().sum::<f64>() / xs.len() as f64;
            (xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / xs.len() as f64).sqrt()
        }
        "round" => return elementwise(f64::round),
        "ceil" => return elementwise(f64::ceil),
        "floor" => return elementwise(f64::floor),
        "lg" => return elementwise(f64::log10),
        "ln" => return elementwise(f64::ln),
        "percentile" => {
            let mut xs = nonempty(flatten(name, args.get(..1).unwrap_or_default())?)?;
            let (p, p_pos) = number_arg(name, args.get(1), pos)?;
            if !(0.0..=100.0).contains(&p) {
                return Err(error(p_pos, format!("{name}: percentile must be between 0 and 100, got {}", fmt_num(p))));
            }
            xs.sort_by(f64::total_cmp);
            let rank = ((p / 100.0 * xs.len() as f64).ceil() as usize).clamp(1, xs.len());
            xs.get(rank - 1).copied().unwrap_or(f64::NAN)
        }
        "val" => {
            let xs = flatten(name, args.get(..1).unwrap_or_default())?;
            let (i, i_pos) = number_arg(name, args.get(1), pos)?;
            let found = if i >= 0.0 && i.fract() == 0.0 { xs.get(i as usize).copied() } else { None };
            let Some(x) = found else {
                let msg = format!("{name}: index {} out of range for a vector of length {}", fmt_num(i), xs.len());
                return Err(error(i_pos, msg));
            };
            x
        }
        _ => return Err(error(pos, format!("unknown function '{name}'"))),
    };
    finite(result, pos, name).map(Value::Number)
}

struct Evaluator<'a> {
    inputs: &'a Inputs,
    user_targets: &'a HashSet<String>,
    users: HashMap<String, Value>,
    services: HashMap<String, Value>,
}

impl Evaluator<'_> {
    fn eval(&self, e: &Expr) -> Result<Value, FormulaError> {
        match &e.kind {
            ExprKind::Number(n) => Ok(Value::Number(*n)),
            ExprKind::Str(s) => Ok(Value::Str(s.clone())),
            ExprKind::Var(name) => self.user_var(name, e.pos),
            ExprKind::Service(name) => self.service_var(name, e.pos),
            ExprKind::Unary(op, x) => unary(op, self.eval(x)?, e.pos),
            ExprKind::Binary(op @ ("&&" | "||"), _, l, r) => {
                // Short-circuit: `0 && x` and `1 || x` do not evaluate `x`.
                let left = self.truthy(l)?;
                if left == (*op == "||") {
                    return Ok(Value::Number(truth(left)));
                }
                Ok(Value::Number(truth(self.truthy(r)?)))
            }
            ExprKind::Binary(op, op_pos, l, r) => binary(op, self.eval(l)?, self.eval(r)?, *op_pos),
            ExprKind::Ternary(c, t, f) => self.eval(if self.truthy(c)? { t } else { f }),
            ExprKind::Call(name, args) => call(name, &self.eval_args(args)?, e.pos),
            ExprKind::Method(var, method, args) => self.method(var, method, &self.eval_args(args)?, e.pos),
        }
    }

    fn eval_args(&self, args: &[Expr]) -> Result<Vec<(Value, Pos)>, FormulaError> {
        args.iter().map(|a| self.eval(a).map(|v| (v, a.pos))).collect()
    }

    fn truthy(&self, e: &Expr) -> Result<bool, FormulaError> {
        match self.eval(e)? {
            Value::Number(x) => Ok(x != 0.0),
            other => Err(error(e.pos, format!("expected a number as a condition, got {}", type_name(&other)))),
        }
    }

    fn user_var(&self, name: &str, pos: Pos) -> Result<Value, FormulaError> {
        if let Some(v) = self.users.get(name) {
            return Ok(v.clone());
        }
        if self.user_targets.contains(name) {
            return Err(error(pos, format!("variable '{name}' is read before it is assigned")));
        }
        if DEALLOCATION_OPTIONS.contains(&name) {
            return Ok(Value::Str(name.to_string()));
        }
        time_constant(name).map(Value::Interval).ok_or_else(|| error(pos, format!("unknown variable '{name}'")))
    }

    fn service_var(&self, name: &str, pos: Pos) -> Result<Value, FormulaError> {
        if let Some(v) = self.services.get(name) {
            return Ok(v.clone());
        }
        if let Some(samples) = self.inputs.series.get(name) {
            let latest = samples.last().ok_or_else(|| error(pos, format!("${name} has no samples")))?;
            return Ok(Value::Number(latest.1));
        }
        let value = self.inputs.variables.get(name).copied();
        value.map(Value::Number).ok_or_else(|| error(pos, format!("unknown service variable '${name}'")))
    }

    /// Percentage (0..=100) of the samples expected within `interval` that are present.
    fn coverage(&self, samples: &[(f64, f64)], interval: f64, pos: Pos) -> Result<f64, FormulaError> {
        let period = self.inputs.sample_period;
        if !(period.is_finite() && period > 0.0) {
            return Err(error(pos, "sample period must be a positive number of seconds"));
        }
        let expected = interval / period;
        if expected <= 0.0 {
            return Ok(100.0);
        }
        let present = self.window(samples, interval).count() as f64;
        Ok((present / expected * 100.0).min(100.0))
    }

    fn window<'s>(&self, samples: &'s [(f64, f64)], interval: f64) -> impl Iterator<Item = f64> + 's {
        let from = self.inputs.now - interval;
        samples.iter().filter(move |s| s.0 >= from).map(|s| s.1)
    }

    fn method(&self, var: &str, method: &str, args: &[(Value, Pos)], pos: Pos) -> Result<Value, FormulaError> {
        let not_sampled = || error(pos, format!("${var} is not a sample variable"));
        let samples = self.inputs.series.get(var).ok_or_else(not_sampled)?;
        let what = format!("${var}.{method}");
        let interval = || match args.first() {
            Some((Value::Interval(x), _)) if *x >= 0.0 => Ok(*x),
            Some((other, p)) => {
                Err(error(*p, format!("{what}: expected a time interval >= 0, got {}", describe(other))))
            }
            None => Err(error(pos, format!("{what}: missing argument"))),
        };
        match (method, args.first()) {
            ("Count", _) => Ok(Value::Number(samples.len() as f64)),
            ("GetSamplePeriod", _) => Ok(Value::Interval(self.inputs.sample_period)),
            ("GetSamplePercent", _) => self.coverage(samples, interval()?, pos).map(Value::Number),
            ("GetSample", Some((Value::Number(n), p))) => {
                if !(*n >= 0.0 && n.fract() == 0.0) || args.len() > 1 {
                    let msg = format!("{what}: a sample count must be a whole number >= 0, without a percentage");
                    return Err(error(*p, msg));
                }
                let skip = samples.len().saturating_sub(*n as usize);
                Ok(Value::Vector(samples.iter().skip(skip).map(|s| s.1).collect()))
            }
            ("GetSample", _) => {
                let interval = interval()?;
                if let Some(arg) = args.get(1) {
                    let (pct, pct_pos) = number_arg(&what, Some(arg), pos)?;
                    if !(0.0..=100.0).contains(&pct) {
                        return Err(error(pct_pos, format!("{what}: percentage must be between 0 and 100")));
                    }
                    let have = self.coverage(samples, interval, pos)?;
                    if have < pct {
                        let (have, pct) = (fmt_num((have * 10.0).round() / 10.0), fmt_num(pct));
                        return Err(error(pos, format!("{what}: only {have}% of samples available, {pct}% required")));
                    }
                }
                Ok(Value::Vector(self.window(samples, interval).collect()))
            }
            _ => Err(error(pos, format!("unknown method '{method}'"))),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    const SAMPLE: &str = "startingNumberOfVMs = 1;
maxNumberofVMs = 25;
pendingTaskSamplePercent = $PendingTasks.GetSamplePercent(180 * TimeInterval_Second);
pendingTaskSamples = pendingTaskSamplePercent < 70 ? startingNumberOfVMs : avg($PendingTasks.GetSample(180 * TimeInterval_Second));
$TargetDedicatedNodes = min(maxNumberofVMs, pendingTaskSamples);
$NodeDeallocationOption = taskcompletion;";

    /// Inputs at now = 1000 s with a 30 s sample period; `values` are the most recent samples, oldest first.
    fn inputs(series: &[(&str, &[f64])]) -> Inputs {
        let mut inputs = Inputs { now: 1000.0, sample_period: 30.0, ..Inputs::default() };
        for (name, values) in series {
            let n = values.len();
            let samples = values.iter().enumerate().map(|(i, v)| (1000.0 - 30.0 * (n - 1 - i) as f64, *v)).collect();
            inputs.series.insert(name.to_string(), samples);
        }
        inputs.variables.insert("CurrentDedicatedNodes".to_string(), 3.0);
        inputs
    }

    fn run(src: &str, inputs: &Inputs) -> Result<Evaluation, FormulaError> {
        Formula::parse(src)?.evaluate(inputs)
    }

    /// The value last assigned to `name`.
    fn get(src: &str, inputs: &Inputs, name: &str) -> Value {
        let ev = run(src, inputs).unwrap();
        ev.assignments.into_iter().rev().find(|(n, _)| n == name).unwrap().1
    }

    fn num(src: &str) -> f64 {
        match get(src, &inputs(&[]), "x") {
            Value::Number(n) => n,
            other => panic!("not a number: {other:?}"),
        }
    }

    /// Asserts that `src` fails at the first occurrence of `at` (or at the end if `at` is "") with `msg` in the message.
    fn fails(src: &str, inputs: &Inputs, at: &str, msg: &str) {
        let err = run(src, inputs).unwrap_err();
        let offset = if at.is_empty() { src.len() } else { src.find(at).unwrap() };
        let line = src[..offset].matches('\n').count() + 1;
        let column = src[..offset].chars().rev().take_while(|&c| c != '\n').count() + 1;
        assert_eq!((err.line, err.column), (line, column), "{err}");
        assert!(err.message.contains(msg), "{err}");
    }

    #[test]
    fn precedence_and_ternary() {
        assert_eq!(num("x = 1 + 2 * 3"), 7.0);
        assert_eq!(num("x = (1 + 2) * 3"), 9.0);
        assert_eq!(num("x = 2 - 3 - 4"), -5.0);
        assert_eq!(num("x = 12 / 2 / 3 + 10 % 4"), 4.0);
        assert_eq!(num("x = -2 * -3 + !0"), 7.0);
        assert_eq!(num("x = 1 + 1 < 3 == 1"), 1.0);
        assert_eq!(num("x = 0 || 1 && 0"), 0.0);
        assert_eq!(num("x = 1 || 1 / 0"), 1.0); // short-circuit
        assert_eq!(num("x = 0 ? 1 : 0 ? 2 : 3"), 3.0);
        assert_eq!(num("x = 1 ? 0 ? 4 : 5 : 6"), 5.0);
        assert_eq!(num("x = 2 > 1 ? 10 + 1 : 20"), 11.0);
        assert_eq!(num("x = 1.5e1 + 2.5 // comment\n;;"), 17.5);
        assert_eq!(num("a = 2; b = a * a; x = b + a;"), 6.0);
        assert_eq!(num("x = \"a\" == \"a\" && \"a\" != \"b\""), 1.0);
    }

    #[test]
    fn classic_sample_formula() {
        let full = inputs(&[("PendingTasks", &[2.0, 4.0, 6.0, 8.0, 10.0, 12.0, 14.0])]);
        let ev = run(SAMPLE, &full).unwrap();
        assert_eq!(ev.target_dedicated_nodes, Some(8.0));
        assert_eq!(ev.node_deallocation_option.as_deref(), Some("taskcompletion"));
        assert_eq!(ev.assignments.len(), 6);
        assert_eq!(ev.assignments[2], ("pendingTaskSamplePercent".to_string(), Value::Number(100.0)));
        let sparse = inputs(&[("PendingTasks", &[50.0, 60.0])]);
        assert_eq!(run(SAMPLE, &sparse).unwrap().target_dedicated_nodes, Some(1.0));
        let busy = inputs(&[("PendingTasks", &[100.0; 7])]);
        assert_eq!(run(SAMPLE, &busy).unwrap().target_dedicated_nodes, Some(25.0));
    }

    #[test]
    fn slot_aware_formula() {
        let src = "$TargetDedicatedNodes = min(4, max(0, ceil($PendingTaskSlots / 8)));";
        for (slots, nodes) in [(0.0, 0.0), (20.0, 3.0), (100.0, 4.0)] {
            let ev = run(src, &inputs(&[("PendingTaskSlots", &[1.0, slots])])).unwrap();
            assert_eq!(ev.target_dedicated_nodes, Some(nodes));
        }
    }

    #[test]
    fn sample_methods() {
        let i = inputs(&[("ActiveTasks", &[1.0, 2.0, 3.0, 4.0, 5.0]), ("Idle", &[])]);
        assert_eq!(get("x = $ActiveTasks.GetSample(3)", &i, "x"), Value::Vector(vec![3.0, 4.0, 5.0]));
        assert_eq!(get("x = $ActiveTasks.GetSample(9)", &i, "x"), Value::Vector(vec![1.0, 2.0, 3.0, 4.0, 5.0]));
        assert_eq!(get("x = $ActiveTasks.GetSample(0)", &i, "x"), Value::Vector(vec![]));
        assert_eq!(get("x = $ActiveTasks.GetSample(TimeInterval_Minute)", &i, "x"), Value::Vector(vec![3.0, 4.0, 5.0]));
        let x = get("x = $ActiveTasks.GetSample(2 * TimeInterval_Minute, 100)", &i, "x");
        assert_eq!(x, Value::Vector(vec![1.0, 2.0, 3.0, 4.0, 5.0]));
        assert_eq!(get("x = $ActiveTasks.GetSamplePercent(5 * TimeInterval_Minute)", &i, "x"), Value::Number(50.0));
        assert_eq!(get("x = $ActiveTasks.Count()", &i, "x"), Value::Number(5.0));
        assert_eq!(get("x = $Idle.Count()", &i, "x"), Value::Number(0.0));
        assert_eq!(get("x = $ActiveTasks.GetSamplePeriod() * 2", &i, "x"), Value::Interval(60.0));
        let src = "a = 1;\nx = $ActiveTasks.GetSample(5 * TimeInterval_Minute, 70);";
        let err = run(src, &i).unwrap_err();
        assert_eq!(err.message, "$ActiveTasks.GetSample: only 50% of samples available, 70% required");
        assert_eq!((err.line, err.column), (2, 5));
        fails("x = $ActiveTasks.GetSample(-1)", &i, "-1", "whole number");
        fails("x = $ActiveTasks.GetSample(\"a\")", &i, "\"a\"", "time interval");
        fails("x = $ActiveTasks.GetSample(TimeInterval_Hour, 101)", &i, "101", "between 0 and 100");
        fails("x = $Nope.Count()", &i, "$Nope", "not a sample variable");
        fails("x = $ActiveTasks.Bogus()", &i, "Bogus", "unknown method 'Bogus'");
        fails("x = $ActiveTasks.Count(1)", &i, "Count", "expects 0 argument(s), got 1");
    }

    #[test]
    fn bare_and_service_variables() {
        let i = inputs(&[("PendingTasks", &[7.0, 9.0]), ("Idle", &[])]);
        assert_eq!(get("x = $PendingTasks + 1", &i, "x"), Value::Number(10.0));
        assert_eq!(get("x = $CurrentDedicatedNodes * 2", &i, "x"), Value::Number(6.0));
        assert_eq!(get("$Custom = 5; x = $Custom + $Custom", &i, "x"), Value::Number(10.0));
        assert_eq!(get("$PendingTasks = 1; x = $PendingTasks", &i, "x"), Value::Number(1.0));
        fails("x = 1 +\n  $Idle", &i, "$Idle", "$Idle has no samples");
        fails("x = $Missing", &i, "$Missing", "unknown service variable '$Missing'");
    }

    #[test]
    fn functions_and_values() {
        let i = inputs(&[]);
        assert_eq!(num("x = avg(1, 2, 3, 6)"), 3.0);
        assert_eq!(num("x = sum(1, 2) + len(1, 2, 3) + count(4)"), 7.0);
        assert_eq!(num("x = percentile(avg(1) + 0 * 1, 50) + percentile(min(9, 3), 0)"), 4.0);
        assert_eq!(num("x = round(2.5) + floor(-1.5) + ceil(0.1)"), 2.0);
        assert_eq!(num("x = lg(1000) + ln(1)"), 3.0);
        assert_eq!(num("x = std(2, 4, 4, 4, 5, 5, 7, 9)"), 2.0);
        let v = inputs(&[("T", &[15.0, 20.0, 35.0, 40.0, 50.0])]);
        assert_eq!(get("x = percentile($T.GetSample(5), 40)", &v, "x"), Value::Number(20.0));
        assert_eq!(get("x = percentile($T.GetSample(5), 100)", &v, "x"), Value::Number(50.0));
        assert_eq!(get("x = val($T.GetSample(5), 2)", &v, "x"), Value::Number(35.0));
        assert_eq!(get("x = max($T.GetSample(2), 3)", &v, "x"), Value::Number(50.0));
        assert_eq!(get("x = $T.GetSample(2) * 2 - 1", &v, "x"), Value::Vector(vec![79.0, 99.0]));
        assert_eq!(get("x = -(1 - $T.GetSample(2))", &v, "x"), Value::Vector(vec![39.0, 49.0]));
        assert_eq!(get("x = round($T.GetSample(1) / 3)", &v, "x"), Value::Vector(vec![17.0]));
        assert_eq!(get("x = TimeInterval_Minute * 5 + TimeInterval_Second", &i, "x"), Value::Interval(301.0));
        assert_eq!(get("x = 2 * TimeInterval_Hour / 4 - TimeInterval_Zero", &i, "x"), Value::Interval(1800.0));
        assert_eq!(get("x = TimeInterval_Day", &i, "x").to_string(), "86400s");
        assert_eq!(get("x = TimeInterval_Week", &i, "x"), Value::Interval(604_800.0));
        assert_eq!(Value::Vector(vec![1.0, 2.5, -0.0]).to_string(), "[1, 2.5, 0]");
        assert_eq!(Value::Number(3.0).to_string(), "3");
        assert_eq!(Value::Str("requeue".into()).to_string(), "requeue");
        assert_eq!(get("x = \"terminate\"", &i, "x"), Value::Str("terminate".into()));
    }

    #[test]
    fn parse_errors_have_positions() {
        let i = inputs(&[]);
        fails("$TargetDedicatedNodes = max(1, ;", &i, ";", "expected an expression, found ';'");
        fails("a = 1;\nb = mux(2);", &i, "mux", "unknown function 'mux'");
        fails("x = (1 + 2", &i, "", "expected ')' to close '(', found end of formula");
        fails("x = 1 2", &i, "2", "expected ';' or end of formula, found number 2");
        fails("x = 1;\n  = 2", &i, "= 2", "expected a variable name to assign to");
        fails("x 1", &i, "1", "expected '=' after 'x'");
        fails("x = \"open", &i, "\"", "unterminated string literal");
        fails("x = 1 # 2", &i, "#", "unexpected character '#'");
        fails("x = 1 & 2", &i, "&", "unexpected character '&'");
        fails("x = $ + 1", &i, "$", "expected a variable name after '$'");
        fails("x = 1e999", &i, "1e999", "invalid number");
        fails("x = min()", &i, "min", "min expects at least 1 argument(s), got 0");
        fails("x = val(1)", &i, "val", "val expects 2 argument(s), got 1");
        fails("x = 1 ? 2", &i, "", "expected ':' in conditional expression");
        fails("x = $A.", &i, "", "expected a method name, found end of formula");
        let deep = format!("x = {}1{}", "(".repeat(100), ")".repeat(100));
        assert!(run(&deep, &i).unwrap_err().message.contains("nested too deeply"));
        let long = format!("x = {}1", "1 + ".repeat(1000));
        assert!(run(&long, &i).unwrap_err().message.contains("too complex"));
        let err = Formula::parse("a = 1;\nb = mux(2);").unwrap_err();
        assert_eq!(err.to_string(), "line 2, column 5: unknown function 'mux'");
    }

    #[test]
    fn evaluation_errors_have_positions() {
        let i = inputs(&[]);
        fails("x = 4 / (2 - 2)", &i, "/", "division by zero");
        fails("x = 4 % 0", &i, "%", "division by zero");
        fails("x = 1;\ny = 2 + zz", &i, "zz", "unknown variable 'zz'");
        fails("x = later + 1; later = 2", &i, "later", "'later' is read before it is assigned");
        fails("x = 1 + \"a\"", &i, "+", "cannot apply '+' to a number and a string");
        fails("x = TimeInterval_Minute + 1", &i, "+", "a time interval and a number");
        fails("x = -\"a\"", &i, "-", "cannot apply unary '-' to a string");
        fails("x = \"a\" ? 1 : 2", &i, "\"a\"", "expected a number as a condition");
        fails("x = avg(1, \"a\")", &i, "\"a\"", "avg: expected numbers or vectors");
        fails("x = lg(0)", &i, "0", "not a finite number");
        fails("x = 1e300 * 1e300", &i, "*", "not a finite number");
        fails("x = val(5, 1)", &i, "1)", "index 1 out of range");
        fails("x = percentile(5, 120)", &i, "120", "between 0 and 100");
        fails("$TargetDedicatedNodes = 0 - 5", &i, "0", "$TargetDedicatedNodes must be a non-negative number, got -5");
        fails("$TargetDedicatedNodes = \"x\"", &i, "\"x\"", "must be a non-negative number");
        let src = "$NodeDeallocationOption = \"destroy\"";
        fails(src, &i, "\"destroy\"", "must be one of requeue, terminate, taskcompletion, retaineddata");
        let ev = run("$NodeDeallocationOption = requeue; $NodeDeallocationOption = \"retaineddata\"", &i).unwrap();
        assert_eq!(ev.node_deallocation_option.as_deref(), Some("retaineddata"));
        let mut nan = inputs(&[]);
        nan.variables.insert("Bad".into(), f64::NAN);
        fails("$TargetDedicatedNodes = $Bad", &nan, "$Bad", "must be a non-negative number");
    }

    struct Lcg(u64);

    impl Lcg {
        fn next(&mut self) -> usize {
            self.0 = self.0.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            (self.0 >> 33) as usize
        }
    }

    #[test]
    fn never_panics() {
        let i = inputs(&[("PendingTasks", &[1.0, 2.0]), ("Empty", &[])]);
        let mut rng = Lcg(42);
        for _ in 0..2000 {
            let bytes: Vec<u8> = (0..rng.next() % 64).map(|_| (rng.next() % 256) as u8).collect();
            let _ = run(&String::from_utf8_lossy(&bytes), &i);
        }
        let pieces = [
            "$PendingTasks",
            "$Empty",
            ".GetSample(",
            ".Count()",
            "GetSamplePercent",
            "(",
            ")",
            ",",
            ";",
            "=",
            "?",
            ":",
            "1",
            "0",
            "2.5",
            "-",
            "+",
            "*",
            "/",
            "%",
            "!",
            "<",
            "==",
            "&&",
            "||",
            "min(",
            "avg(",
            "val(",
            "percentile(",
            "x",
            "TimeInterval_Minute",
            "\"requeue\"",
            "taskcompletion",
            "$TargetDedicatedNodes",
            "\n",
            " ",
        ];
        for _ in 0..2000 {
            let src: String = (0..rng.next() % 24).map(|_| pieces[rng.next() % pieces.len()]).collect();
            let _ = run(&src, &i);
        }
        for (end, _) in SAMPLE.char_indices() {
            let _ = run(&SAMPLE[..end], &i);
        }
        for bomb in ["-".repeat(100_000), "!(".repeat(100_000), "x = ".to_string() + &"-".repeat(100_000) + "1"] {
            assert!(run(&bomb, &i).is_err());
        }
        // The largest accepted shapes still evaluate on a test thread's stack.
        let chain = format!("x = {}1", "1 + ".repeat(MAX_HEIGHT - 1));
        let nested = format!("x = {}1{}", "min(1, 2 * -".repeat(MAX_NESTING - 1), ")".repeat(MAX_NESTING - 1));
        assert_eq!(get(&chain, &i, "x"), Value::Number(MAX_HEIGHT as f64));
        assert_eq!(get(&nested, &i, "x"), Value::Number(-2.0));
    }
}

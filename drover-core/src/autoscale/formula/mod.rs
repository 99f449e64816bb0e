//! Autoscale formula interpreter: owns tokenizing, parsing and evaluating drover's subset of the Azure Batch
//! autoscale formula language (assignments, arithmetic, time intervals, built-in functions, sample variables).
//!
//! The source goes through `lexer` (tokens), `parser` (statements) and `eval` (values).

mod eval;
mod lexer;
mod parser;

use eval::{describe, Evaluator, DEALLOCATION_OPTIONS};
use lexer::{tokenize, Tok, Token};
use parser::{Parser, Stmt};
use std::collections::{HashMap, HashSet};
use std::fmt;

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

/// A 1-based line and column in the formula's source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Pos {
    line: usize,
    column: usize,
}

fn error(pos: Pos, message: impl Into<String>) -> FormulaError {
    FormulaError { line: pos.line, column: pos.column, message: message.into() }
}

fn fmt_num(n: f64) -> String {
    (n + 0.0).to_string() // `+ 0.0` turns -0 into 0
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::parser::{MAX_HEIGHT, MAX_NESTING};
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

//! Formula evaluation: operators, built-in functions, variables and the sample-series methods.

use super::parser::{Expr, ExprKind};
use super::{error, fmt_num, FormulaError, Inputs, Pos, Value};
use std::collections::{HashMap, HashSet};

pub(super) const DEALLOCATION_OPTIONS: [&str; 4] = ["requeue", "terminate", "taskcompletion", "retaineddata"];

pub(super) fn describe(v: &Value) -> String {
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

pub(super) struct Evaluator<'a> {
    pub(super) inputs: &'a Inputs,
    pub(super) user_targets: &'a HashSet<String>,
    pub(super) users: HashMap<String, Value>,
    pub(super) services: HashMap<String, Value>,
}

impl Evaluator<'_> {
    pub(super) fn eval(&self, e: &Expr) -> Result<Value, FormulaError> {
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

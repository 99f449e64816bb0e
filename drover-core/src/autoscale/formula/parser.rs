//! Formula syntax: the expression tree and the parser that builds it, checking names and argument counts.

use super::lexer::{describe_tok, Tok, Token};
use super::{error, FormulaError, Pos};

/// Maximum nesting of sub-expressions (parentheses, call arguments, ternary branches) accepted by the parser.
pub(super) const MAX_NESTING: usize = 64;
/// Maximum height of an expression tree; bounds evaluator recursion for inputs such as `1+1+1+...`.
pub(super) const MAX_HEIGHT: usize = 256;

#[derive(Debug, Clone)]
pub(super) struct Stmt {
    pub(super) target: String,
    pub(super) expr: Expr,
}

/// An expression node; `pos` is where the expression starts.
#[derive(Debug, Clone)]
pub(super) struct Expr {
    pub(super) kind: ExprKind,
    pub(super) pos: Pos,
    height: usize,
}

/// Operators are kept as their source symbols (`"+"`, `"&&"`, unary `"-"`); names are validated while parsing.
#[derive(Debug, Clone)]
pub(super) enum ExprKind {
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

pub(super) struct Parser {
    pub(super) tokens: Vec<Token>,
    pub(super) at: usize,
    pub(super) nesting: usize,
    pub(super) eof: Token,
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

    pub(super) fn parse_statements(&mut self) -> Result<Vec<Stmt>, FormulaError> {
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

//! `$[...]` expressions as Asterisk 22 evaluates them (`main/ast_expr2.fl`
//! and `main/ast_expr2.y`), run after the variables inside have been
//! substituted.
//!
//! What is modelled, from the C:
//! - the lexer: operators `| & = == != < > <= >= + - * / % ! ? :: ~~ ( )`
//!   (`||`, `&&` too), quoted strings kept *with* their quotes, numbers
//!   `[0-9]+(.[0-9]+)?`, words of `[a-zA-Z0-9.';\_^#@]`, bytes >= 0x80 and
//!   `$` + any byte but `{`; any other byte is skipped;
//! - the grammar's precedences (all comparisons on one level, left to
//!   right; unary `-` and `!` above `* / %`);
//! - values: a comparison is by bytes when either side is a string that is
//!   not a number (`"1" = 1` is false: the quotes count), numeric
//!   otherwise; arithmetic on non-numbers follows `op_plus` and friends;
//! - syntax errors: bison reduces what it can before it notices, so
//!   `$["" " != "-"]` is `""` and `$[1 + ]` is `0`.
//!
//! Not modelled: function calls `NAME(...)` and the regex operators `:`
//! and `=~` (the loader refuses them in the dialplan text; if data brings
//! them in at run time the evaluation fails with [`ExprError`]).
//! Numbers are `f64` where Asterisk uses `long double`: integers print the
//! same, fractions may differ in the last digits.

/// An expression the simulator cannot evaluate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("$[...] uses {0}, which the simulator does not model")]
pub(crate) struct ExprError(pub(crate) &'static str);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Or,
    And,
    Eq,
    EqTilde,
    TildeTilde,
    Gt,
    Lt,
    Ge,
    Le,
    Ne,
    Plus,
    Comma,
    Minus,
    Mult,
    Div,
    Mod,
    Cond,
    Compl,
    Colon,
    ColonColon,
    Lp,
    Rp,
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    /// `AST_EXPR_string` text.
    Str(Vec<u8>),
    /// `AST_EXPR_numeric_string` text.
    Num(Vec<u8>),
    Op(Op),
}

/// Operators, longest first within a shared prefix.
const OPS: &[(&[u8], Op)] = &[
    (b"||", Op::Or),
    (b"&&", Op::And),
    (b"==", Op::Eq),
    (b"=~", Op::EqTilde),
    (b"~~", Op::TildeTilde),
    (b">=", Op::Ge),
    (b"<=", Op::Le),
    (b"!=", Op::Ne),
    (b"::", Op::ColonColon),
    (b"|", Op::Or),
    (b"&", Op::And),
    (b"=", Op::Eq),
    (b">", Op::Gt),
    (b"<", Op::Lt),
    (b"+", Op::Plus),
    (b",", Op::Comma),
    (b"-", Op::Minus),
    (b"*", Op::Mult),
    (b"/", Op::Div),
    (b"%", Op::Mod),
    (b"?", Op::Cond),
    (b"!", Op::Compl),
    (b":", Op::Colon),
    (b"(", Op::Lp),
    (b")", Op::Rp),
];

fn is_word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b".';\\_^#@".contains(&b) || b >= 0x80
}

/// Length of the word rule's match at `s[i..]` (0 if none).
fn word_len(s: &[u8], i: usize) -> usize {
    let mut j = i;
    loop {
        match s.get(j) {
            Some(&b) if is_word_byte(b) => j += 1,
            Some(b'$') if s.get(j + 1).is_some_and(|n| *n != b'{') => j += 2,
            _ => return j - i,
        }
    }
}

/// Length of the number rule's match at `s[i..]` (0 if none).
fn number_len(s: &[u8], i: usize) -> usize {
    let digits = |from: usize| s[from..].iter().take_while(|b| b.is_ascii_digit()).count();
    let int = digits(i);
    if int == 0 {
        return 0;
    }
    let mut n = int;
    if s.get(i + n) == Some(&b'.') {
        let frac = digits(i + n + 1);
        if frac > 0 {
            n += 1 + frac;
        }
    }
    n
}

/// After `${`: the text up to the matching `}` and the trailing bytes
/// (flex's `var` and `trail` states). Returns the end of the token, or
/// `None` when the braces never close (flex drops the text).
fn var_token_end(s: &[u8], mut i: usize) -> Option<usize> {
    const DELIMS: &[u8] = b"-\t\r \n$():?%/+=*<>!|&";
    let mut curly = 0i32;
    loop {
        let rel = s[i..].iter().position(|b| *b == b'{' || *b == b'}')?;
        i += rel;
        if s[i] == b'{' {
            curly += 1;
            i += 1;
            continue;
        }
        i += 1;
        curly -= 1;
        if curly >= 0 {
            continue;
        }
        // trail: non-delimiters, then maybe another `${`.
        let trail = s[i..].iter().take_while(|b| !DELIMS.contains(b)).count();
        i += trail;
        if s.get(i) == Some(&b'$') && s.get(i + 1) == Some(&b'{') {
            i += 2;
            curly = 0;
            continue;
        }
        return Some(i);
    }
}

fn lex(s: &[u8]) -> Vec<Tok> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < s.len() {
        let c = s[i];
        if matches!(c, b' ' | b'\t' | b'\r' | b'\n') {
            i += 1;
            continue;
        }
        if c == b'$' && s.get(i + 1) == Some(&b'{') {
            match var_token_end(s, i + 2) {
                Some(end) => {
                    out.push(Tok::Str(s[i..end].to_vec()));
                    i = end;
                }
                None => i = s.len(),
            }
            continue;
        }
        if c == b'"' {
            if let Some(len) = s[i + 1..].iter().position(|b| *b == b'"') {
                out.push(Tok::Str(s[i..i + len + 2].to_vec()));
                i += len + 2;
            } else {
                i += 1; // no rule: flex echoes and skips it
            }
            continue;
        }
        let num = number_len(s, i);
        let word = word_len(s, i);
        if num > 0 && num >= word {
            out.push(Tok::Num(s[i..i + num].to_vec()));
            i += num;
            continue;
        }
        if word > 0 {
            let end = i + word;
            if s.get(end) == Some(&b'$') && s.get(end + 1) == Some(&b'{') {
                match var_token_end(s, end + 2) {
                    Some(e) => {
                        out.push(Tok::Str(s[i..e].to_vec()));
                        i = e;
                    }
                    None => i = s.len(),
                }
            } else {
                out.push(Tok::Str(s[i..end].to_vec()));
                i = end;
            }
            continue;
        }
        match OPS.iter().find(|(t, _)| s[i..].starts_with(t)) {
            Some((t, op)) => {
                out.push(Tok::Op(*op));
                i += t.len();
            }
            None => i += 1, // no rule: flex echoes and skips it
        }
    }
    out
}

/// A value (`struct val`).
#[derive(Debug, Clone, PartialEq)]
enum Val {
    Number(f64),
    NumericString(Vec<u8>),
    String(Vec<u8>),
}

impl Val {
    fn is_string(&self) -> bool {
        matches!(self, Val::String(_))
    }

    /// `to_number`: converts a numeric string in place; false for text.
    fn make_number(&mut self) -> bool {
        match self {
            Val::Number(_) => true,
            Val::String(_) => false,
            Val::NumericString(s) => {
                let n = std::str::from_utf8(s)
                    .ok()
                    .and_then(|t| t.parse::<f64>().ok())
                    .unwrap_or(0.0);
                *self = Val::Number(n);
                true
            }
        }
    }

    fn number(&self) -> f64 {
        match self {
            Val::Number(n) => *n,
            _ => 0.0,
        }
    }

    fn into_bytes(self) -> Vec<u8> {
        match self {
            Val::Number(n) => format_number(n).into_bytes(),
            Val::NumericString(s) | Val::String(s) => s,
        }
    }

    fn is_zero_or_null(&mut self) -> bool {
        match self {
            Val::Number(n) => *n == 0.0,
            Val::String(s) => s.is_empty(),
            Val::NumericString(s) => s.is_empty() || (self.make_number() && self.number() == 0.0),
        }
    }
}

/// `"%.18Lg"` for the values the simulator meets: integers exactly.
fn format_number(n: f64) -> String {
    if n.is_nan() {
        return "nan".into();
    }
    if n.is_infinite() {
        return if n > 0.0 { "inf".into() } else { "-inf".into() };
    }
    if n.fract() == 0.0 && n.abs() < 1e18 {
        return format!("{}", n as i64);
    }
    // %g with 18 significant digits, trailing zeros dropped.
    let sci = format!("{n:.17e}");
    let (mant, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if !(-4..18).contains(&exp) {
        let mant = mant.trim_end_matches('0').trim_end_matches('.');
        let sign = if exp < 0 { '-' } else { '+' };
        return format!("{mant}e{sign}{:02}", exp.abs());
    }
    let decimals = usize::try_from(17 - exp).unwrap_or(0);
    let fixed = format!("{n:.decimals$}");
    if fixed.contains('.') {
        fixed
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_string()
    } else {
        fixed
    }
}

/// `strip_quotes`: when the text starts and ends with `"`, every `"` goes.
fn strip_quotes(v: &mut Val) {
    if let Val::String(s) | Val::NumericString(s) = v
        && s.first() == Some(&b'"')
        && s.last() == Some(&b'"')
    {
        s.retain(|b| *b != b'"');
    }
}

fn to_string(v: Val) -> Vec<u8> {
    v.into_bytes()
}

fn compare(mut a: Val, mut b: Val, f: impl Fn(std::cmp::Ordering) -> bool) -> Val {
    let r = if a.is_string() || b.is_string() {
        f(to_string(a).cmp(&to_string(b)))
    } else {
        a.make_number();
        b.make_number();
        match a.number().partial_cmp(&b.number()) {
            Some(o) => f(o),
            None => false,
        }
    };
    Val::Number(if r { 1.0 } else { 0.0 })
}

fn binary(op: Op, mut a: Val, mut b: Val) -> Result<Val, ExprError> {
    use std::cmp::Ordering::*;
    Ok(match op {
        Op::Or => {
            if a.is_zero_or_null() {
                b
            } else {
                a
            }
        }
        Op::And => {
            if a.is_zero_or_null() || b.is_zero_or_null() {
                Val::Number(0.0)
            } else {
                a
            }
        }
        Op::Eq => compare(a, b, |o| o == Equal),
        Op::Ne => compare(a, b, |o| o != Equal),
        Op::Lt => compare(a, b, |o| o == Less),
        Op::Gt => compare(a, b, |o| o == Greater),
        Op::Le => compare(a, b, |o| o != Greater),
        Op::Ge => compare(a, b, |o| o != Less),
        Op::Plus => match (a.make_number(), b.make_number()) {
            (false, false) => Val::Number(0.0),
            (false, true) => b,
            (true, false) => a,
            (true, true) => Val::Number(a.number() + b.number()),
        },
        Op::Minus => match (a.make_number(), b.make_number()) {
            (false, false) => Val::Number(0.0),
            (false, true) => Val::Number(-b.number()),
            (true, false) => a,
            (true, true) => Val::Number(a.number() - b.number()),
        },
        Op::Mult => {
            if a.make_number() && b.make_number() {
                Val::Number(a.number() * b.number())
            } else {
                Val::Number(0.0)
            }
        }
        Op::Div => {
            if !a.make_number() {
                Val::Number(0.0)
            } else if !b.make_number() || b.number() == 0.0 {
                Val::Number(f64::from(i32::MAX))
            } else {
                Val::Number(a.number() / b.number())
            }
        }
        Op::Mod => {
            if !(a.make_number() && b.make_number()) {
                Val::Number(0.0)
            } else if b.number() == 0.0 {
                b
            } else {
                Val::Number(a.number() % b.number())
            }
        }
        Op::TildeTilde => {
            let mut a = Val::String(to_string(a));
            let mut b = Val::String(to_string(b));
            strip_quotes(&mut a);
            strip_quotes(&mut b);
            let mut s = to_string(a);
            s.extend(to_string(b));
            make_str(s)
        }
        Op::Colon | Op::EqTilde => return Err(ExprError("a regex match (`:` or `=~`)")),
        _ => return Err(ExprError("an operator out of place")),
    })
}

/// `make_str`: a numeric string when it looks like one.
fn make_str(s: Vec<u8>) -> Val {
    let numeric = match s.first() {
        Some(c) if c.is_ascii_digit() || *c == b'.' => {
            s.iter().all(|c| c.is_ascii_digit() || *c == b'.')
        }
        _ => false,
    };
    if numeric {
        Val::NumericString(s)
    } else {
        Val::String(s)
    }
}

fn compl(a: Val) -> Val {
    let v1 = match &a {
        Val::Number(n) => *n != 0.0,
        Val::String(s) | Val::NumericString(s) => {
            if s.is_empty() || s.as_slice() == b"0" {
                false
            } else {
                atoi(s) != 0
            }
        }
    };
    Val::Number(if v1 { 0.0 } else { 1.0 })
}

/// C's `atoi`: optional blanks and sign, then digits (saturating here).
pub(crate) fn atoi(s: &[u8]) -> i64 {
    let mut i = s.iter().take_while(|b| b.is_ascii_whitespace()).count();
    let neg = match s.get(i) {
        Some(b'-') => {
            i += 1;
            true
        }
        Some(b'+') => {
            i += 1;
            false
        }
        _ => false,
    };
    let mut n: i64 = 0;
    for b in &s[i..] {
        if !b.is_ascii_digit() {
            break;
        }
        n = n.saturating_mul(10).saturating_add(i64::from(b - b'0'));
    }
    if neg { -n } else { n }
}

/// Binding power of a binary operator (higher binds tighter).
fn level(op: Op) -> Option<u8> {
    Some(match op {
        Op::Cond | Op::ColonColon => 1,
        Op::Or => 2,
        Op::And => 3,
        Op::Eq | Op::Gt | Op::Lt | Op::Ge | Op::Le | Op::Ne => 4,
        Op::Plus | Op::Minus => 5,
        Op::Mult | Op::Div | Op::Mod => 6,
        Op::Colon | Op::EqTilde | Op::TildeTilde => 8,
        _ => return None,
    })
}

/// The level of unary `-` and `!` (`TOK_COMPL`, right-associative).
const UNARY: u8 = 7;

/// How a parse stopped short.
enum Fail {
    /// A syntax error with no complete expression (the result is `0`).
    Syntax,
    /// Something not modelled.
    Unmodelled(ExprError),
}

struct Parser {
    toks: Vec<Tok>,
    pos: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }

    fn primary(&mut self) -> Result<Val, Fail> {
        let tok = self.toks.get(self.pos).cloned().ok_or(Fail::Syntax)?;
        self.pos += 1;
        match tok {
            Tok::Str(s) => {
                if self.peek() == Some(&Tok::Op(Op::Lp)) {
                    return Err(Fail::Unmodelled(ExprError("a function call")));
                }
                Ok(Val::String(s))
            }
            Tok::Num(s) => {
                if self.peek() == Some(&Tok::Op(Op::Lp)) {
                    return Err(Fail::Unmodelled(ExprError("a function call")));
                }
                Ok(Val::NumericString(s))
            }
            Tok::Op(Op::Lp) => {
                let v = self.expr(0)?;
                if self.peek() != Some(&Tok::Op(Op::Rp)) {
                    return Err(Fail::Syntax);
                }
                self.pos += 1;
                Ok(v)
            }
            Tok::Op(Op::Minus) => {
                let mut v = self.expr(UNARY)?;
                Ok(if v.make_number() {
                    Val::Number(-v.number())
                } else {
                    Val::Number(0.0)
                })
            }
            Tok::Op(Op::Compl) => Ok(compl(self.expr(UNARY)?)),
            Tok::Op(_) => Err(Fail::Syntax),
        }
    }

    /// An expression whose binary operators bind tighter than `min`.
    fn expr(&mut self, min: u8) -> Result<Val, Fail> {
        let mut left = self.primary()?;
        loop {
            let Some(Tok::Op(op)) = self.peek().cloned() else {
                return Ok(left);
            };
            let Some(lv) = level(op) else {
                return Ok(left);
            };
            if lv <= min || op == Op::ColonColon {
                return Ok(left);
            }
            self.pos += 1;
            if op == Op::Cond {
                let then = self.expr(0)?;
                if self.peek() != Some(&Tok::Op(Op::ColonColon)) {
                    return Err(Fail::Syntax);
                }
                self.pos += 1;
                let other = self.expr(lv)?;
                left = cond(left, then, other);
                continue;
            }
            let right = self.expr(lv)?;
            left = binary(op, left, right).map_err(Fail::Unmodelled)?;
        }
    }
}

fn cond(mut a: Val, b: Val, c: Val) -> Val {
    if let Val::String(s) = &a {
        if !s.is_empty() && s.as_slice() != b"\"\"" && s.as_slice() != b"0" {
            b
        } else {
            c
        }
    } else {
        a.make_number();
        if a.number() != 0.0 { b } else { c }
    }
}

/// Evaluates the text of `$[...]` (after substitution) as `ast_expr` does.
///
/// # Errors
/// [`ExprError`] for regex matches and function calls.
pub(crate) fn eval(text: &[u8]) -> Result<Vec<u8>, ExprError> {
    let mut p = Parser {
        toks: lex(text),
        pos: 0,
    };
    if p.toks.is_empty() {
        return Ok(Vec::new());
    }
    match p.expr(0) {
        // Tokens left over: bison has already reduced the expression to
        // `start`, so its value stands (and a syntax error is logged).
        Ok(v) => Ok(v.into_bytes()),
        Err(Fail::Syntax) => Ok(b"0".to_vec()),
        Err(Fail::Unmodelled(e)) => Err(e),
    }
}

/// Why the static text of an expression cannot be modelled (checked at
/// load time with every `${...}` replaced by a number).
pub(crate) fn check_static(text: &[u8]) -> Result<(), ExprError> {
    let toks = lex(text);
    for (i, t) in toks.iter().enumerate() {
        match t {
            Tok::Op(Op::Colon) | Tok::Op(Op::EqTilde) => {
                return Err(ExprError("a regex match (`:` or `=~`)"));
            }
            Tok::Str(_) | Tok::Num(_) if toks.get(i + 1) == Some(&Tok::Op(Op::Lp)) => {
                return Err(ExprError("a function call"));
            }
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(s: &str) -> String {
        String::from_utf8(eval(s.as_bytes()).expect("modelled")).expect("utf8")
    }

    #[test]
    fn the_shipped_dialplans_expressions() {
        assert_eq!(e(r#""-" != "-""#), "0");
        assert_eq!(e(r#""s" != "-""#), "1");
        assert_eq!(e("2 < 2"), "0");
        assert_eq!(e("1 < 2"), "1");
        assert_eq!(e("3 - 1"), "2");
        assert_eq!(e("1 - 1"), "0");
    }

    #[test]
    fn comparisons_strings_and_numbers() {
        assert_eq!(e("10 > 9"), "1", "numeric");
        assert_eq!(e(r#""10" > "9""#), "0", "by bytes: quoted strings");
        assert_eq!(e(r#""1" = 1"#), "0", "the quotes count");
        assert_eq!(e("abc = abc"), "1");
        assert_eq!(e("a <= b"), "1");
        assert_eq!(e("b >= a"), "1");
        assert_eq!(e("1 == 1.0"), "1");
        // All comparisons on one level, left to right.
        assert_eq!(e("3 > 2 > 1"), "0");
    }

    #[test]
    fn arithmetic_and_logic() {
        assert_eq!(e("1 + 2 * 3"), "7");
        assert_eq!(e("(1 + 2) * 3"), "9");
        assert_eq!(e("7 / 2"), "3.5");
        assert_eq!(e("7 % 4"), "3");
        assert_eq!(e("- 2 + 5"), "3");
        assert_eq!(e("!0"), "1");
        assert_eq!(e("!abc"), "1", "atoi(\"abc\") is 0");
        assert_eq!(e("abc + 2"), "2");
        assert_eq!(e("2 - abc"), "2");
        assert_eq!(e("abc - 2"), "-2");
        assert_eq!(e("1 / 0"), "2147483647");
        assert_eq!(e("0 | x"), "x");
        assert_eq!(e("007 | x"), "7");
        assert_eq!(e("1 & 0"), "0");
        assert_eq!(e("1 ? yes :: no"), "yes");
        assert_eq!(
            e(r#""" ? yes :: no"#),
            "no",
            "op_cond treats `\"\"` as false"
        );
        assert_eq!(e(r#"a ~~ "b""#), "ab");
        assert_eq!(e(r#""a""#), r#""a""#);
        assert_eq!(e(""), "");
    }

    /// What a real Asterisk 22.10.1 computed for `conf"x` in the shipped
    /// `GotoIf($["${EXTEN:4:1}" != "-"]...)`: `""` (then a syntax error).
    #[test]
    fn syntax_errors_keep_what_bison_reduced() {
        assert_eq!(e(r#"""" != "-""#), r#""""#);
        assert_eq!(e("1 2"), "1");
        assert_eq!(e("1 + 2 3"), "3");
        assert_eq!(e("1 +"), "0");
        assert_eq!(e("(1 2)"), "0");
        assert_eq!(e("1 ? 2 3"), "0");
        assert_eq!(e(")"), "0");
        assert_eq!(e("< 2"), "0");
    }

    #[test]
    fn lexer_corners() {
        assert_eq!(e("1.5 + 1"), "2.5");
        assert_eq!(e("1.2.3"), "1.2.3", "a word, not a number");
        assert_eq!(e("$x = $x"), "1");
        assert_eq!(e("[1] = 1"), "1", "brackets are skipped");
        assert_eq!(
            e(r#"" = 1"#),
            "0",
            "a lone quote is skipped: `= 1` is a syntax error"
        );
        assert_eq!(e("${A} = ${A}"), "1");
        assert_eq!(e("a${B}c = a${B}c"), "1");
        assert_eq!(e("${A"), "");
    }

    #[test]
    fn unmodelled_constructs_are_errors() {
        assert!(eval(b"abc : a").is_err());
        assert!(eval(b"abc =~ a").is_err());
        assert!(eval(b"LEN(abc)").is_err());
        assert!(check_static(b"0 : 1").is_err());
        assert!(check_static(b"FOO(1)").is_err());
        assert!(check_static(br#""0" != "-""#).is_ok());
    }

    #[test]
    fn no_panic_on_odd_input() {
        for s in [
            "\"",
            "\"\"\"",
            "$",
            "${",
            "${}",
            "${}}",
            "((((",
            "))))",
            "?::",
            "::",
            "-",
            "!",
            "\u{ff}",
            "1e999",
            "99999999999999999999999999 * 9999999999999",
            "1 ? 2 :: 3 ? 4 :: 5",
            "~",
            "~~",
            "a ~~",
            "= = =",
        ] {
            let _ = eval(s.as_bytes());
            let _ = check_static(s.as_bytes());
        }
        assert_eq!(e("99999999999999999999 + 1"), "1e+20");
    }
}

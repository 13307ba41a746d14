//! `${...}` and `$[...]` substitution as Asterisk 22 does it
//! (`main/pbx_variables.c`), the functions the simulator models (`CUT`,
//! `FIELDQTY`), and the small C helpers the applications share
//! (`ast_app_separate_args`, `sscanf("%d")`, `ast_get_encoded_char`).
//!
//! One pass, like the C: a value put into the output is never scanned
//! again, so text from the network cannot bring in new substitutions.
//! The text inside `${...}` and `$[...]` is substituted first when it
//! holds `${` or `$[`. `${VAR:offset:length}` takes bytes (offsets from
//! the end when negative; a negative length leaves that many off the end).
//! Buffers have Asterisk's sizes: a value is cut at 4095 bytes
//! (`VAR_BUF_SIZE`), an application's data at 8191 (`EXT_DATA_SIZE`), and
//! nesting stops at depth 15.

use super::expr;

/// `VAR_BUF_SIZE - 1`: the longest value of a variable or function.
pub(crate) const VAR_MAX: usize = 4095;
/// `EXT_DATA_SIZE - 1`: the longest substituted application data.
pub(crate) const DATA_MAX: usize = 8191;
/// `MAX_VARIABLE_SUB_RECURSE_DEPTH`.
const MAX_DEPTH: usize = 15;

/// Where variable values come from (builtins, channel, globals).
pub(crate) trait Vars {
    /// The value of `name`, or `None` when it is not set.
    fn get(&self, name: &[u8]) -> Option<Vec<u8>>;
}

/// Something a substitution met that the simulator does not model.
pub(crate) type Unmodelled = expr::ExprError;

/// Substitutes `input`, at most `count` bytes of output.
///
/// # Errors
/// An expression the simulator does not model.
pub(crate) fn substitute(
    input: &[u8],
    vars: &dyn Vars,
    count: usize,
) -> Result<Vec<u8>, Unmodelled> {
    substitute_depth(input, vars, count, 0)
}

/// The end (exclusive, after the closer) of a `${`/`$[` body starting at
/// `start` (just after the opener), whether it needs substituting, and
/// whether it closed.
fn scan_body(s: &[u8], start: usize, open: u8, close: u8, other: u8) -> (usize, bool, bool) {
    let mut brackets = 1;
    let mut needsub = false;
    let mut i = start;
    while brackets > 0 && i < s.len() {
        let next = s.get(i + 1).copied();
        if s[i] == b'$' && next == Some(open) {
            needsub = true;
            brackets += 1;
            i += 1;
        } else if s[i] == open {
            brackets += 1;
        } else if s[i] == close {
            brackets -= 1;
        } else if s[i] == b'$' && next == Some(other) {
            needsub = true;
            i += 1;
        }
        i += 1;
    }
    let end = i.min(s.len());
    (end, needsub, brackets == 0)
}

fn push_limited(out: &mut Vec<u8>, bytes: &[u8], count: usize) {
    let room = count.saturating_sub(out.len());
    out.extend_from_slice(&bytes[..bytes.len().min(room)]);
}

fn substitute_depth(
    input: &[u8],
    vars: &dyn Vars,
    count: usize,
    depth: usize,
) -> Result<Vec<u8>, Unmodelled> {
    let mut out = Vec::new();
    if depth >= MAX_DEPTH {
        return Ok(out);
    }
    let mut i = 0;
    while i < input.len() && out.len() < count {
        let dollar = input[i..].iter().position(|b| *b == b'$').map(|p| i + p);
        let (copy_to, kind) = match dollar {
            Some(d) => match input.get(d + 1) {
                Some(b'{') => (d, Some(b'{')),
                Some(b'[') => (d, Some(b'[')),
                _ => (d + 1, None),
            },
            None => (input.len(), None),
        };
        push_limited(&mut out, &input[i..copy_to], count);
        i = copy_to;
        let Some(kind) = kind else {
            continue;
        };
        let (close, other) = if kind == b'{' {
            (b'}', b'[')
        } else {
            (b']', b'{')
        };
        let start = i + 2;
        let (end, needsub, closed) = scan_body(input, start, kind, close, other);
        let body_end = if closed { end - 1 } else { end };
        let mut body = input[start..body_end.max(start)].to_vec();
        body.truncate(VAR_MAX);
        i = end;
        if needsub {
            body = substitute_depth(&body, vars, VAR_MAX, depth + 1)?;
        }
        if kind == b'{' {
            if let Some(v) = read_variable(&body, vars, depth) {
                push_limited(&mut out, &v, count);
            }
        } else {
            let v = expr::eval(&body)?;
            push_limited(&mut out, &v, count);
        }
    }
    Ok(out)
}

/// `parse_variable_name` then the lookup and `substring`.
fn read_variable(body: &[u8], vars: &dyn Vars, depth: usize) -> Option<Vec<u8>> {
    let mut parens: i32 = 0;
    let mut isfunc = false;
    let mut name_end = body.len();
    let mut offset = 0i32;
    let mut length = i32::MAX;
    for (i, &c) in body.iter().enumerate() {
        if c == b'(' {
            isfunc = true;
            parens += 1;
        } else if c == b')' {
            parens -= 1;
        } else if c == b':' && parens == 0 {
            name_end = i;
            // sscanf("%30d:%30d"): a missing part keeps its default.
            if let Some((o, rest)) = scan_int(&body[i + 1..]) {
                offset = o;
                if let Some(r) = rest.strip_prefix(b":")
                    && let Some((l, _)) = scan_int(r)
                {
                    length = l;
                }
            }
            break;
        }
    }
    let name = &body[..name_end];
    let value = if isfunc {
        read_function(name, vars, depth)?
    } else {
        vars.get(name)?
    };
    let mut value = value;
    value.truncate(VAR_MAX);
    Some(substring(&value, offset, length).to_vec())
}

/// `substring`: bytes, negative offsets from the end, negative lengths
/// leave bytes off the end.
pub(crate) fn substring(value: &[u8], offset: i32, length: i32) -> &[u8] {
    let lr = i64::try_from(value.len()).unwrap_or(i64::MAX);
    let (mut offset, length) = (i64::from(offset), i64::from(length));
    if offset == 0 && length >= lr {
        return value;
    }
    if offset < 0 {
        offset = (lr + offset).max(0);
    }
    if offset >= lr {
        return &[];
    }
    let start = usize::try_from(offset).unwrap_or(0);
    let end = if length >= 0 && length < lr - offset {
        offset + length
    } else if length < 0 {
        if lr > offset - length {
            lr + length
        } else {
            offset
        }
    } else {
        lr
    };
    let end = usize::try_from(end).unwrap_or(start).max(start);
    &value[start..end.min(value.len())]
}

/// `sscanf(s, "%30d")`: blanks, a sign, up to 30 characters of number.
/// Returns the value (as glibc stores it in an `int`) and the rest.
pub(crate) fn scan_int(s: &[u8]) -> Option<(i32, &[u8])> {
    let mut i = s.iter().take_while(|b| b.is_ascii_whitespace()).count();
    let start = i;
    if matches!(s.get(i), Some(b'-' | b'+')) {
        i += 1;
    }
    let digits = s[i..]
        .iter()
        .take(30 - (i - start))
        .take_while(|b| b.is_ascii_digit())
        .count();
    if digits == 0 {
        return None;
    }
    let end = i + digits;
    let text = std::str::from_utf8(&s[start..end]).ok()?;
    // strtol saturates at the long range, then the store into an int
    // keeps the low 32 bits.
    let long: i64 = text.parse().unwrap_or(if text.starts_with('-') {
        i64::MIN
    } else {
        i64::MAX
    });
    Some((long as i32, &s[end..]))
}

/// `__ast_app_separate_args(buf, delim, remove_chars=1, ...)`: splits at
/// `delim` outside `()`, `[]` and quotes; quotes and backslashes are
/// removed; at most `max` pieces (the last keeps the rest).
pub(crate) fn separate_args(buf: &[u8], delim: u8, max: usize) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    if max == 0 {
        return out;
    }
    let (mut paren, mut bracket, mut quote) = (0u32, 0u32, false);
    let mut i = 0;
    let mut ended_on_delim = false;
    while i < buf.len() && out.len() < max - 1 {
        let mut cur = Vec::new();
        ended_on_delim = false;
        while i < buf.len() {
            let c = buf[i];
            i += 1;
            match c {
                b'(' => {
                    paren += 1;
                    cur.push(c);
                }
                b')' => {
                    paren = paren.saturating_sub(1);
                    cur.push(c);
                }
                b'[' => {
                    bracket += 1;
                    cur.push(c);
                }
                b']' => {
                    bracket = bracket.saturating_sub(1);
                    cur.push(c);
                }
                b'"' if delim != b'"' => quote = !quote,
                b'\\' => {
                    // The next character is taken literally.
                    if let Some(&n) = buf.get(i) {
                        cur.push(n);
                        i += 1;
                    }
                }
                _ if c == delim && paren == 0 && bracket == 0 && !quote => {
                    ended_on_delim = true;
                    break;
                }
                _ => cur.push(c),
            }
        }
        out.push(cur);
    }
    // The last slot takes the rest as it is; a trailing delimiter makes
    // one more, empty, argument.
    if i < buf.len() || ended_on_delim {
        out.push(buf[i..].to_vec());
    }
    out
}

/// `ast_get_encoded_char`: one byte, with `\n \r \t \xHH \0OOO` escapes.
pub(crate) fn encoded_char(s: &[u8]) -> Option<u8> {
    let first = *s.first()?;
    if first != b'\\' {
        return Some(first);
    }
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    match s.get(1).copied() {
        Some(b'n') => Some(b'\n'),
        Some(b'r') => Some(b'\r'),
        Some(b't') => Some(b'\t'),
        Some(b'x') => {
            let h1 = hex(*s.get(2)?)?;
            Some(match s.get(3).copied().and_then(hex) {
                Some(h2) => h1.wrapping_shl(4).wrapping_add(h2),
                None => h1,
            })
        }
        Some(b'0') => {
            let mut v: u8 = 0;
            for &c in s[2..].iter().take_while(|c| (b'0'..=b'7').contains(c)) {
                v = v.wrapping_shl(3).wrapping_add(c - b'0');
            }
            Some(v)
        }
        Some(c) => Some(c),
        None => Some(0),
    }
}

/// The functions the loader accepts in `${NAME(...)}`.
pub(crate) const FUNCTIONS: &[&str] = &["CUT", "FIELDQTY"];

/// `ast_func_read`: `None` when the function fails or is unknown.
fn read_function(call: &[u8], vars: &dyn Vars, depth: usize) -> Option<Vec<u8>> {
    let open = call.iter().position(|b| *b == b'(')?;
    let name = &call[..open];
    let mut args = &call[open + 1..];
    if let Some(close) = args.iter().rposition(|b| *b == b')') {
        args = &args[..close];
    }
    let value_of = |var: &[u8]| -> Vec<u8> {
        let mut expr = b"${".to_vec();
        expr.extend_from_slice(var);
        expr.push(b'}');
        substitute_depth(&expr, vars, VAR_MAX, depth + 1).unwrap_or_default()
    };
    match name {
        b"CUT" => {
            let a = separate_args(args, b',', 3);
            if a.len() < 3 {
                return None; // "Syntax: CUT(...) - missing argument!"
            }
            let value = value_of(&a[0]);
            let delim = encoded_char(&a[1]).unwrap_or(b'-');
            cut(&value, delim, &a[2])
        }
        b"FIELDQTY" => {
            let a = separate_args(args, b',', 2);
            let n = match a.get(1) {
                None => 1,
                Some(d) => {
                    let value = value_of(&a[0]);
                    match encoded_char(d).filter(|c| *c != 0) {
                        _ if value.is_empty() => 0,
                        Some(c) => value.iter().filter(|b| **b == c).count() + 1,
                        None => 1,
                    }
                }
            };
            Some(n.to_string().into_bytes())
        }
        _ => None,
    }
}

/// `CUT`'s field selection: `N`, `N-M`, `-M`, `N-`, joined with `&`.
fn cut(value: &[u8], delim: u8, spec: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    if value.is_empty() {
        return Some(out);
    }
    // strsep with a NUL delimiter never splits.
    let fields: Vec<&[u8]> = if delim == 0 {
        vec![value]
    } else {
        value.split(|b| *b == delim).collect()
    };
    let mut cur = 1usize; // the number of the next field to read
    let mut emitted = 0;
    for range in spec.split(|b| *b == b'&') {
        if cur > fields.len() {
            break;
        }
        let (start, stop) = field_range(range)?;
        while cur <= fields.len() && i64::from(start) > cur as i64 {
            cur += 1;
        }
        while cur <= fields.len() && cur as i64 <= i64::from(stop) {
            if emitted > 0 && delim != 0 {
                out.push(delim);
            }
            out.extend_from_slice(fields[cur - 1]);
            emitted += 1;
            cur += 1;
        }
    }
    Some(out)
}

/// The `sscanf` cascade of `cut_internal`: `%d-%d`, `-%d`, `%d-`, `%d`.
fn field_range(r: &[u8]) -> Option<(i32, i32)> {
    let first = scan_int(r);
    if let Some((a, rest)) = first
        && let Some(rest) = rest.strip_prefix(b"-")
        && let Some((b, _)) = scan_int(rest)
    {
        return Some((a, b));
    }
    if let Some(rest) = r.strip_prefix(b"-")
        && let Some((b, _)) = scan_int(rest)
    {
        return Some((1, b));
    }
    let (a, rest) = first?;
    if rest.first() == Some(&b'-') {
        Some((a, i32::MAX))
    } else {
        Some((a, a))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    struct Map(HashMap<Vec<u8>, Vec<u8>>);

    impl Vars for Map {
        fn get(&self, name: &[u8]) -> Option<Vec<u8>> {
            self.0.get(name).cloned()
        }
    }

    fn vars(pairs: &[(&str, &str)]) -> Map {
        Map(pairs
            .iter()
            .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
            .collect())
    }

    fn s(text: &str, v: &Map) -> String {
        String::from_utf8_lossy(&substitute(text.as_bytes(), v, DATA_MAX).expect("ok")).into_owned()
    }

    #[test]
    fn exten_substrings() {
        let v = vars(&[("EXTEN", "conf-sales")]);
        assert_eq!(s("${EXTEN}", &v), "conf-sales");
        assert_eq!(s("${EXTEN:5}", &v), "sales");
        assert_eq!(s("${EXTEN:4:1}", &v), "-");
        assert_eq!(s("${EXTEN:-5}", &v), "sales");
        assert_eq!(s("${EXTEN:-5:2}", &v), "sa");
        assert_eq!(s("${EXTEN:0:-6}", &v), "conf");
        assert_eq!(s("${EXTEN:2:-6}", &v), "nf");
        assert_eq!(s("${EXTEN:20}", &v), "");
        assert_eq!(s("${EXTEN:-20}", &v), "conf-sales");
        assert_eq!(s("${EXTEN:x}", &v), "conf-sales", "a bad offset is 0");
        assert_eq!(s("${EXTEN:0:-20}", &v), "");
        assert_eq!(s("a${NOPE}b", &v), "ab");
        assert_eq!(s("$5 and $", &v), "$5 and $");
    }

    #[test]
    fn expressions_and_nesting() {
        let v = vars(&[("EXTEN", "conf-sales"), ("N", "3"), ("WHICH", "EXTEN")]);
        assert_eq!(s(r#"$["${EXTEN:4:1}" != "-"]"#, &v), "0");
        assert_eq!(s("$[${N} - 1]", &v), "2");
        assert_eq!(s("${${WHICH}:0:4}", &v), "conf");
        assert_eq!(s("x$[1 + $[2 * 3]]y", &v), "x7y");
        // Values are not scanned again.
        let w = vars(&[("A", "${B}"), ("B", "no")]);
        assert_eq!(s("${A}", &w), "${B}");
        // Unclosed: the rest is the name.
        assert_eq!(s("${EXTEN", &v), "conf-sales");
    }

    #[test]
    fn cut_and_fieldqty() {
        let v = vars(&[("A", "sales-emea-bob"), ("E", ""), ("ONE", "bob")]);
        assert_eq!(s("${FIELDQTY(A,-)}", &v), "3");
        assert_eq!(s("${FIELDQTY(ONE,-)}", &v), "1");
        assert_eq!(s("${FIELDQTY(E,-)}", &v), "0");
        assert_eq!(s("${FIELDQTY(A)}", &v), "1");
        assert_eq!(s("${CUT(A,-,1-2)}", &v), "sales-emea");
        assert_eq!(s("${CUT(A,-,3)}", &v), "bob");
        assert_eq!(s("${CUT(A,-,2-)}", &v), "emea-bob");
        assert_eq!(s("${CUT(A,-,-2)}", &v), "sales-emea");
        assert_eq!(s("${CUT(A,-,1&3)}", &v), "sales-bob");
        assert_eq!(s("${CUT(A,-,9)}", &v), "");
        assert_eq!(s("${CUT(A,-,1-0)}", &v), "");
        assert_eq!(
            s("${CUT(A,-,x)}", &v),
            "",
            "a bad range: the function fails"
        );
        assert_eq!(s("${CUT(A,-)}", &v), "", "a missing argument");
        assert_eq!(s("${CUT(A,,1)}", &v), "sales", "no delimiter: `-`");
        assert_eq!(
            s(
                "${CUT(A,-,1-$[${FIELDQTY(A,-)} - 1])},${CUT(A,-,${FIELDQTY(A,-)})}",
                &v
            ),
            "sales-emea,bob"
        );
        assert_eq!(s("${NOSUCH(A)}", &v), "");
    }

    #[test]
    fn separate_args_like_asterisk() {
        let a = |t: &str, n| -> Vec<String> {
            separate_args(t.as_bytes(), b',', n)
                .into_iter()
                .map(|v| String::from_utf8(v).expect("utf8"))
                .collect()
        };
        assert_eq!(
            a("corral,conference,sales", 129),
            ["corral", "conference", "sales"]
        );
        assert_eq!(a("corral,conference,", 129), ["corral", "conference", ""]);
        assert_eq!(a("corral", 129), ["corral"]);
        assert!(a("", 129).is_empty());
        assert_eq!(a("a,\"b,c\",d", 129), ["a", "b,c", "d"]);
        assert_eq!(a("a\\,b,c", 129), ["a,b", "c"]);
        assert_eq!(a("f(a,b),c", 129), ["f(a,b)", "c"]);
        assert_eq!(a("a,b,c,d", 2), ["a", "b,c,d"]);
        assert_eq!(a(",", 129), ["", ""]);
        assert_eq!(a("\"\"", 129), [""]);
    }

    #[test]
    fn scanf_and_escapes() {
        assert_eq!(scan_int(b" 12x"), Some((12, &b"x"[..])));
        assert_eq!(scan_int(b"-3"), Some((-3, &b""[..])));
        assert_eq!(scan_int(b"x"), None);
        assert_eq!(scan_int(b"-"), None);
        assert_eq!(
            scan_int(b"99999999999").map(|v| v.0),
            Some(99999999999i64 as i32)
        );
        assert_eq!(encoded_char(b"-"), Some(b'-'));
        assert_eq!(encoded_char(b"\\t"), Some(b'\t'));
        assert_eq!(encoded_char(b"\\x41"), Some(b'A'));
        assert_eq!(encoded_char(b"\\x"), None);
        assert_eq!(encoded_char(b""), None);
    }

    #[test]
    fn no_panic_on_odd_input() {
        let v = vars(&[("EXTEN", "a\u{e9}b")]);
        for t in [
            "${",
            "$[",
            "${}",
            "$[]",
            "${:}",
            "${EXTEN:",
            "${EXTEN:1:}",
            "${EXTEN:-99999999999:5}",
            "${EXTEN:2147483647:2147483647}",
            "${EXTEN:-2147483648:-2147483648}",
            "${CUT(}",
            "${CUT(EXTEN,\\x,1)}",
            "${FIELDQTY(,)}",
            "${(((}",
            "${)))}",
            "$[$[$[$[",
            "${${${${${${${${${${${${${${${${${${EXTEN}}}}}}}}}}}}}}}}}}",
        ] {
            let _ = substitute(t.as_bytes(), &v, DATA_MAX);
        }
        assert_eq!(
            s("${EXTEN:1:1}", &v).as_bytes(),
            [0xef, 0xbf, 0xbd],
            "half a UTF-8 character"
        );
    }
}

//! Extension names and patterns as Asterisk 22 matches and orders them.
//!
//! This is a port of the rules in `main/pbx.c` (tag 22.10.1) that decide
//! which extension of a context a dialled string reaches, written from the
//! C and checked against a real Asterisk 22.10.1 (`tests/dialplan_fidelity.rs`):
//!
//! - `_extension_match_core`: the default ("old") matcher. Asterisk uses
//!   it unless `[general] extenpatternmatchnew` is set (the trie matcher,
//!   which the simulator refuses). After `_`, `X` is 0-9, `Z` 1-9, `N` 2-9
//!   in either case; `[...]` is one character of a set (`a-z` ranges,
//!   compared as C's signed `char`); `.` is one or more characters, `!`
//!   zero or more; `-` is skipped in the pattern *and in the dialled
//!   string*, so `conf-` dials like `conf` and does not reach `_co[n]f-.`.
//!   Literal characters and sets are case-sensitive.
//! - `ext_cmp`: the order of a context's extensions, which is the order
//!   the matcher tries them: literal names first (byte order, dashes
//!   ignored), then patterns, position by position, the smaller character
//!   set first (`X` before `[A-Za-z0-9]` before `.` before `!`).
//! - `ext_strncpy`: the stored form: spaces dropped, and for matching the
//!   dashes outside `[...]` too.
//!
//! Everything works on bytes: extensions come from the network and may
//! hold any byte but NUL.

use std::cmp::Ordering;

/// How a dialled string may match a pattern (`enum ext_match_t`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// The whole string matches (`E_MATCH`; also used for spawn and labels).
    Match,
    /// The string matches or could match with more characters
    /// (`E_CANMATCH`, chan_pjsip's overlap check: SIP 484).
    CanMatch,
}

/// The result of `_extension_match_core`: 0 no, 1 match, 2 early match (`!`).
pub(crate) type MatchResult = u8;

/// An extension name as a context keeps it: `name` as written (spaces
/// dropped), `key` also without the dashes outside `[...]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ExtenName {
    /// The name `dialplan show` prints.
    pub(crate) name: String,
    /// What the matcher and the order use (`e->exten`).
    pub(crate) key: Vec<u8>,
}

impl ExtenName {
    /// Stores `raw` as `ast_add_extension2` does.
    pub(crate) fn new(raw: &[u8]) -> Self {
        let name = strip_fluff(raw, false);
        let key = strip_fluff(raw, true);
        ExtenName {
            name: String::from_utf8_lossy(&name).into_owned(),
            key,
        }
    }
}

/// `ext_strncpy`: drops spaces outside `[...]` of a pattern, and with
/// `nofluff` the dashes there too.
fn strip_fluff(src: &[u8], nofluff: bool) -> Vec<u8> {
    let is_pattern = src.first() == Some(&b'_');
    let mut in_squares = false;
    let mut out = Vec::with_capacity(src.len());
    for &c in src {
        match c {
            b'[' if is_pattern => in_squares = true,
            b']' => in_squares = false,
            b' ' if !in_squares => continue,
            b'-' if !in_squares && nofluff => continue,
            _ => {}
        }
        out.push(c);
    }
    out
}

/// C's `char` is signed on the platforms Asterisk runs on.
fn sc(b: u8) -> i8 {
    b as i8
}

fn skip_dashes(s: &[u8], mut i: usize) -> usize {
    while s.get(i) == Some(&b'-') {
        i += 1;
    }
    i
}

/// `ext_cmp_exten_strlen`: the length without dashes.
fn len_without_dashes(s: &[u8]) -> usize {
    s.iter().filter(|c| **c != b'-').count()
}

/// `ext_cmp_exten`: byte order (signed), dashes ignored.
fn cmp_exten(left: &[u8], right: &[u8]) -> i32 {
    let (mut l, mut r) = (0, 0);
    loop {
        l = skip_dashes(left, l);
        r = skip_dashes(right, r);
        let a = left.get(l).copied().unwrap_or(0);
        let b = right.get(r).copied().unwrap_or(0);
        let cmp = i32::from(sc(a)) - i32::from(sc(b));
        if cmp != 0 || a == 0 {
            return cmp;
        }
        l += 1;
        r += 1;
    }
}

/// `ext_cmp_exten_partial`: like [`cmp_exten`] but `right` may end first.
fn cmp_exten_partial(left: &[u8], right: &[u8]) -> i32 {
    let (mut l, mut r) = (0, 0);
    loop {
        l = skip_dashes(left, l);
        r = skip_dashes(right, r);
        let Some(&b) = right.get(r) else {
            return 0;
        };
        let a = left.get(l).copied().unwrap_or(0);
        let cmp = i32::from(sc(a)) - i32::from(sc(b));
        if cmp != 0 {
            return cmp;
        }
        l += 1;
        r += 1;
    }
}

/// `_extension_match_core(pattern, data, mode)`: 0 no match, 1 match, 2
/// early match (`!`). `pattern` is an [`ExtenName::key`].
pub(crate) fn match_core(pattern: &[u8], data: &[u8], mode: Mode) -> MatchResult {
    if pattern.first() != Some(&b'_') {
        let lp = len_without_dashes(pattern);
        let ld = len_without_dashes(data);
        if lp < ld {
            return 0;
        }
        return match mode {
            Mode::Match => u8::from(cmp_exten(pattern, data) == 0),
            Mode::CanMatch => u8::from(ld == 0 || cmp_exten_partial(pattern, data) == 0),
        };
    }
    // A dialled string that is itself a pattern matches an equal pattern.
    if mode == Mode::Match
        && data.first() == Some(&b'_')
        && cmp_pattern(&pattern[1..], &data[1..]) == Ordering::Equal
    {
        return 1;
    }
    let p = &pattern[1..];
    let (mut pi, mut di) = (0usize, 0usize);
    loop {
        di = skip_dashes(data, di);
        pi = skip_dashes(p, pi);
        let (Some(&d), Some(&c)) = (data.get(di), p.get(pi)) else {
            break;
        };
        if c == b'/' {
            break;
        }
        match c {
            b'[' => {
                let start = pi + 1;
                let Some(len) = p[start..].iter().position(|b| *b == b']') else {
                    return 0; // "Wrong usage of [] in the extension"
                };
                let end = start + len;
                if start == end {
                    // An empty set is ignored: the same character of the
                    // dialled string meets what follows.
                    pi = end + 1;
                    continue;
                }
                let mut q = start;
                let mut found = false;
                while q < end {
                    if q + 2 < end && p[q + 1] == b'-' {
                        if sc(d) >= sc(p[q]) && sc(d) <= sc(p[q + 2]) {
                            found = true;
                            break;
                        }
                        q += 3;
                    } else {
                        if d == p[q] {
                            found = true;
                            break;
                        }
                        q += 1;
                    }
                }
                if !found {
                    return 0;
                }
                pi = end;
            }
            b'n' | b'N' if !(b'2'..=b'9').contains(&d) => return 0,
            b'x' | b'X' if !d.is_ascii_digit() => return 0,
            b'z' | b'Z' if !(b'1'..=b'9').contains(&d) => return 0,
            b'n' | b'N' | b'x' | b'X' | b'z' | b'Z' => {}
            b'.' => return 1,
            b'!' => return 2,
            _ if d != c => return 0,
            _ => {}
        }
        di += 1;
        pi += 1;
    }
    if di < data.len() {
        return 0; // the dialled string is longer than the pattern
    }
    match p.get(pi) {
        None | Some(b'/') => 1,
        Some(b'!') => 2,
        Some(_) => u8::from(mode == Mode::CanMatch),
    }
}

/// One position of a pattern for ordering (`ext_cmp_pattern_pos`): a score
/// (set size << 8 | lowest byte, or a wildcard's value) and the set's bits.
fn pattern_pos(p: &[u8], i: &mut Option<usize>, bits: &mut [u8; 32]) -> u32 {
    const BITS: usize = 8;
    loop {
        let Some(mut at) = *i else {
            return 0x30000;
        };
        let mut c = p.get(at).copied().unwrap_or(0);
        at += 1;
        while c == b'-' {
            c = p.get(at).copied().unwrap_or(0);
            at += 1;
        }
        *i = Some(at);
        let set_bit = |bits: &mut [u8; 32], c: u8| {
            bits[usize::from(c) / BITS] |= 1 << ((BITS - 1) - usize::from(c) % BITS);
        };
        match c {
            b'n' | b'N' => {
                bits[6] = 0x3f;
                bits[7] = 0xc0;
                return 0x0800 | u32::from(b'2');
            }
            b'x' | b'X' => {
                bits[6] = 0xff;
                bits[7] = 0xc0;
                return 0x0A00 | u32::from(b'0');
            }
            b'z' | b'Z' => {
                bits[6] = 0x7f;
                bits[7] = 0xc0;
                return 0x0900 | u32::from(b'1');
            }
            b'.' => return 0x18000,
            b'!' => return 0x28000,
            0 => {
                *i = None;
                return 0x30000;
            }
            b'[' => {}
            _ => {
                set_bit(bits, c);
                return 0x0100 | u32::from(c);
            }
        }
        // A character set up to the next ']'.
        let Some(len) = p[at..].iter().position(|b| *b == b']') else {
            return 0x40000;
        };
        let end = at + len;
        let mut count = 0u32;
        let mut cmin = 0xFFu8;
        let mut q = at;
        while q < end {
            let c1 = p[q];
            let c2 = if q + 2 < end && p[q + 1] == b'-' {
                q += 2;
                p[q]
            } else {
                c1
            };
            cmin = cmin.min(c1);
            for c in c1..=c2 {
                let mask = 1u8 << ((BITS - 1) - usize::from(c) % BITS);
                if bits[usize::from(c) / BITS] & mask == 0 {
                    bits[usize::from(c) / BITS] |= mask;
                    count += 0x100;
                }
            }
            q += 1;
        }
        *i = Some(end + 1);
        if count != 0 {
            return count | u32::from(cmin);
        }
        // An empty set is skipped.
    }
}

/// `ext_cmp_pattern` on two patterns without their `_`.
fn cmp_pattern(left: &[u8], right: &[u8]) -> Ordering {
    let (mut l, mut r) = (Some(0usize), Some(0usize));
    loop {
        let mut lb = [0u8; 32];
        let mut rb = [0u8; 32];
        let lp = pattern_pos(left, &mut l, &mut lb);
        let rp = pattern_pos(right, &mut r, &mut rb);
        // Equal scores: the set with the lower bytes first (right and left
        // swapped, as in the C).
        let cmp = lp.cmp(&rp).then_with(|| rb.cmp(&lb));
        if cmp != Ordering::Equal || l.is_none() {
            return cmp;
        }
    }
}

/// `ext_cmp`: the order of two extension keys in a context.
pub(crate) fn ext_cmp(left: &[u8], right: &[u8]) -> Ordering {
    let lp = left.first() == Some(&b'_');
    let rp = right.first() == Some(&b'_');
    match (lp, rp) {
        (false, true) => Ordering::Less,
        (true, false) => Ordering::Greater,
        (false, false) => cmp_exten(left, right).cmp(&0),
        (true, true) => cmp_pattern(&left[1..], &right[1..]),
    }
}

/// Why a pattern is refused: Asterisk loads these with a warning (or
/// never matches them), so the simulator refuses them outright.
pub(crate) fn check_pattern(key: &[u8]) -> Result<(), String> {
    if key.first() != Some(&b'_') {
        return Ok(());
    }
    let mut i = 1;
    while i < key.len() {
        if key[i] == b'[' {
            let Some(len) = key[i + 1..].iter().position(|b| *b == b']') else {
                return Err("a `[` without `]` (Asterisk never matches it)".into());
            };
            let set = &key[i + 1..i + 1 + len];
            if set.is_empty() {
                return Err(
                    "an empty character set `[]` (Asterisk ignores it with a warning)".into(),
                );
            }
            if set.len() >= 2 && set[set.len() - 1] == b'-' {
                return Err(
                    "a `-` at the end of a character set (Asterisk's pattern tree warns about it)"
                        .into(),
                );
            }
            i += len + 2;
        } else {
            i += 1;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(pattern: &str, data: &str) -> u8 {
        match_core(
            &ExtenName::new(pattern.as_bytes()).key,
            data.as_bytes(),
            Mode::Match,
        )
    }

    fn can(pattern: &str, data: &str) -> u8 {
        match_core(
            &ExtenName::new(pattern.as_bytes()).key,
            data.as_bytes(),
            Mode::CanMatch,
        )
    }

    #[test]
    fn x_z_n_are_digit_classes_in_either_case() {
        assert_eq!(m("_X", "0"), 1);
        assert_eq!(m("_x", "9"), 1);
        assert_eq!(m("_Z", "0"), 0);
        assert_eq!(m("_z", "1"), 1);
        assert_eq!(m("_N", "1"), 0);
        assert_eq!(m("_n", "2"), 1);
        // The bug of issue 10: `conf` as a pattern wants a digit 2-9 third.
        assert_eq!(m("_conf-X.", "conf-sales"), 0);
        assert_eq!(m("_co[n]f-.", "conf-sales"), 1);
        assert_eq!(m("_X", "a"), 0);
    }

    #[test]
    fn sets_ranges_and_case() {
        assert_eq!(m("_[A-Za-z0-9].", "Ab"), 1);
        assert_eq!(m("_[A-Za-z0-9].", "*b"), 0);
        assert_eq!(m("_[abc]", "b"), 1);
        assert_eq!(m("_[abc]", "B"), 0);
        assert_eq!(m("_co[n]f", "coNf"), 0);
        // A range needs three characters before `]`: `[a-]` is `a` or `-`.
        assert_eq!(m("_[a-]x", "a1"), 1, "and `x` is a digit");
        assert_eq!(m("_[a-]x", "ax"), 0);
        // Non-ASCII bytes are negative `char`s: below every ASCII range.
        assert_eq!(m("_[A-z].", "\u{e9}x"), 0);
        // An unterminated set never matches; an empty one is skipped.
        assert_eq!(m("_[ab", "a"), 0);
        assert_eq!(m("_[]x", "1"), 1);
    }

    #[test]
    fn dot_bang_and_length() {
        assert_eq!(m("_X.", "1"), 0);
        assert_eq!(m("_X.", "12"), 1);
        assert_eq!(m("_X!", "1"), 2);
        assert_eq!(m("_X!", "123"), 2);
        assert_eq!(m("_!", ""), 2);
        assert_eq!(m("_XX", "123"), 0);
        assert_eq!(m("_XX", "1"), 0);
        assert_eq!(can("_XX", "1"), 1);
        assert_eq!(can("_[A-Za-z0-9].", "s"), 1);
        assert_eq!(can("_[A-Za-z0-9].", "*"), 0);
    }

    #[test]
    fn dashes_are_skipped_in_pattern_and_dialled_string() {
        assert_eq!(
            m("_co[n]f-.", "conf-"),
            0,
            "the dash of conf- is skipped too"
        );
        assert_eq!(m("_[A-Za-z0-9].", "conf-"), 1);
        assert_eq!(m("_co[n]f-.", "c-o-n-f-x"), 1);
        assert_eq!(m("_co[n]f-.", "confX"), 1);
        assert_eq!(m("_[A-Za-z0-9].", "-"), 0);
        assert_eq!(can("_[A-Za-z0-9].", "--"), 1);
        assert_eq!(m("12-34", "1234"), 1);
        assert_eq!(m("1234", "12-34"), 1);
        assert_eq!(m("1234", "123"), 0);
        assert_eq!(can("1234", "12"), 1);
        assert_eq!(m("s", "s"), 1);
        assert_eq!(m("s", "S"), 0);
    }

    #[test]
    fn a_dialled_pattern_matches_its_own_pattern() {
        assert_eq!(m("_X.", "_X."), 1);
        assert_eq!(m("_X.", "_x."), 1);
    }

    fn sorted(names: &[&str]) -> Vec<String> {
        let mut v: Vec<ExtenName> = Vec::new();
        for n in names {
            let e = ExtenName::new(n.as_bytes());
            let at = v
                .iter()
                .position(|x| ext_cmp(&x.key, &e.key) != Ordering::Less)
                .unwrap_or(v.len());
            v.insert(at, e);
        }
        v.into_iter().map(|e| e.name).collect()
    }

    /// The order `dialplan show from-proxy` printed on a real Asterisk
    /// 22.10.1 for these extensions.
    #[test]
    fn order_is_asterisks() {
        let names = [
            "h41",
            "end",
            "h16",
            "ans",
            "_X!",
            "_1-2!",
            "gl",
            "nx",
            "_[a-]x",
            "_[]x.",
            "12-34",
            "_NXXZ",
            "_[0-9]XXX",
            "_123.",
            "_12X.",
            "_1ZX.",
            "_[1-3]2X.",
            "_1!",
            "_1.",
            "_.",
            "_!",
        ];
        assert_eq!(
            sorted(&names),
            [
                "12-34",
                "ans",
                "end",
                "gl",
                "h16",
                "h41",
                "nx",
                "_123.",
                "_12X.",
                "_1-2!",
                "_1ZX.",
                "_1.",
                "_1!",
                "_[a-]x",
                "_[1-3]2X.",
                "_NXXZ",
                "_[0-9]XXX",
                "_[]x.",
                "_X!",
                "_.",
                "_!",
            ]
        );
        assert_eq!(
            sorted(&["_[A-Za-z0-9].", "_queue-.", "_age[n]t-.", "_co[n]f-."]),
            ["_age[n]t-.", "_co[n]f-.", "_queue-.", "_[A-Za-z0-9]."]
        );
        assert_eq!(ext_cmp(b"_nxxz", b"_NXXZ"), Ordering::Equal);
    }

    #[test]
    fn refused_patterns() {
        assert!(check_pattern(b"_[ab").is_err());
        assert!(check_pattern(b"_[]x").is_err());
        assert!(check_pattern(b"_[a-]x").is_err());
        assert!(check_pattern(b"_[A-Za-z0-9].").is_ok());
        assert!(
            check_pattern(b"[]").is_ok(),
            "a literal name is not a pattern"
        );
    }

    #[test]
    fn no_panic_on_odd_bytes() {
        for p in [
            "_",
            "_[",
            "_]",
            "_-",
            "_[-]",
            "_[--]",
            "_!!",
            "_\u{ff}",
            "_[\u{ff}-]",
        ] {
            for d in ["", "-", "_", "_[", "\u{ff}", "a-b-", "[]"] {
                let _ = m(p, d);
                let _ = can(p, d);
                let _ = ext_cmp(p.as_bytes(), d.as_bytes());
                let _ = ext_cmp(d.as_bytes(), p.as_bytes());
            }
        }
    }
}

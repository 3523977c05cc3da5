//! What any match of a pattern must contain, read off the pattern itself, so a scanner can skip
//! its automata for a text that holds none of it (most texts): a pattern's literal prefixes, or a
//! set of bytes one of which every match holds. Both are derived when a scanner is built, so a
//! pattern added or changed later keeps its scanner correct: where nothing can be proven the
//! answer is "no prefilter" and the pattern always runs.
//!
//! Why it matters: between two requests the scanners' automata leave the CPU caches, and running
//! one over a short text costs more in reloading its tables than in matching; a prefilter that
//! says "cannot match" touches a few cache lines instead.

use regex_automata::nfa::thompson::{State, NFA};
use regex_automata::util::syntax;
use regex_syntax::hir::literal::{ExtractKind, Extractor};

/// Parse options of the scanners' patterns (ASCII classes; byte haystacks).
fn parser() -> regex_syntax::Parser {
    regex_syntax::ParserBuilder::new()
        .unicode(false)
        .utf8(false)
        .build()
}

/// The literals one of which starts every match of `pattern` (at most `limit` of them, shortened
/// as needed), or `None` when the pattern has no such finite set (or one holding the empty
/// string, which every text contains).
pub fn prefixes(pattern: &str, limit: usize) -> Option<Vec<Vec<u8>>> {
    let hir = parser().parse(pattern).ok()?;
    let mut seq = Extractor::new()
        .kind(ExtractKind::Prefix)
        .limit_total(limit)
        .extract(&hir);
    seq.dedup();
    let lits = seq.literals()?;
    if lits.is_empty() || lits.iter().any(|l| l.as_bytes().is_empty()) {
        return None;
    }
    Some(lits.iter().map(|l| l.as_bytes().to_vec()).collect())
}

/// Whether every match of `pattern` holds at least one byte of `set`: no path of the pattern's
/// automaton reaches a match over bytes outside `set` (look-arounds taken as always true, which
/// can only add paths, so a "yes" is sound). `false` when the pattern does not compile.
pub fn needs_one_of(pattern: &str, set: &[bool; 256]) -> bool {
    let Ok(nfa) = NFA::compiler()
        .syntax(syntax::Config::new().unicode(false).utf8(false))
        .build(pattern)
    else {
        return false;
    };
    let outside = |lo: u8, hi: u8| (lo..=hi).any(|b| !set[b as usize]);
    let mut seen = vec![false; nfa.states().len()];
    let mut stack = vec![nfa.start_anchored()];
    while let Some(id) = stack.pop() {
        if std::mem::replace(&mut seen[id.as_usize()], true) {
            continue;
        }
        match nfa.state(id) {
            State::Match { .. } => return false,
            State::ByteRange { trans } => {
                if outside(trans.start, trans.end) {
                    stack.push(trans.next);
                }
            }
            State::Sparse(s) => stack.extend(
                s.transitions
                    .iter()
                    .filter(|t| outside(t.start, t.end))
                    .map(|t| t.next),
            ),
            State::Dense(d) => stack.extend(
                d.transitions
                    .iter()
                    .enumerate()
                    .filter(|(b, _)| !set[*b])
                    .map(|(_, &next)| next),
            ),
            State::Look { next, .. } | State::Capture { next, .. } => stack.push(*next),
            State::Union { alternates } => stack.extend(alternates.iter().copied()),
            State::BinaryUnion { alt1, alt2 } => stack.extend([*alt1, *alt2]),
            State::Fail => {}
        }
    }
    true
}

/// A byte set from a predicate.
pub fn byte_set(f: impl Fn(u8) -> bool) -> [bool; 256] {
    std::array::from_fn(|b| f(b as u8))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_of_patterns() {
        let p = prefixes(r"\b(?:AKIA|ASIA)[A-Z0-9]{16}\b", 32).unwrap();
        assert!(
            p.contains(&b"AKIA".to_vec()) && p.contains(&b"ASIA".to_vec()),
            "{p:?}"
        );
        assert_eq!(
            prefixes(r"\bsk-[a-z]{3}", 32).unwrap(),
            vec![b"sk-".to_vec()]
        );
        assert!(prefixes(r"[a-z]+@[a-z]+", 32).is_none() || prefixes(r"[a-z]+@", 4).is_none());
        assert!(prefixes(r"x?y*", 32).is_none()); // the empty string starts a match
        let many = prefixes(r"(?:a|b|c|d)(?:e|f|g|h)(?:i|j|k|l)", 8).unwrap();
        assert!(
            many.len() <= 8 && many.iter().all(|l| !l.is_empty()),
            "{many:?}"
        );
    }

    #[test]
    fn required_bytes() {
        let digits_at = byte_set(|b| b.is_ascii_digit() || b == b'@');
        assert!(needs_one_of(r"\b\d{3}-\d{4}\b", &digits_at));
        assert!(needs_one_of(r"(?i)[a-z]+@[a-z]+\.[a-z]{2,}", &digits_at));
        assert!(needs_one_of(
            r"(?:\+ ?)?(?:\(\d{1,5}\)|\b\d{1,5})",
            &digits_at
        ));
        assert!(!needs_one_of(r"[a-z]+(?:\d+)?", &digits_at)); // digits optional
        assert!(!needs_one_of(r"[a-z]|\d", &digits_at));
        assert!(!needs_one_of(r"(unclosed", &digits_at));
    }
}

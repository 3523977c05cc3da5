//! National numbering plans (libphonenumber's metadata for a fixed list of regions, written to
//! `phone_plans.json` by `scripts/phone_plans.py`): is a phone number written without a country code
//! grouped exactly as one of these regions writes its numbers?
//!
//! This is libphonenumber's EXACT_GROUPING test: strip the region's national prefix, the rest must be
//! a valid number of the region (any number type), and the digit groups as written must be the groups
//! of the region's national format, the first group possibly carrying the prefix; a format whose rule
//! writes the national prefix needs it written. It lets the PII scanner accept "0494 92 82 32" or
//! "(71) 4233-6306" with no phone word nearby, while a number of the same length grouped as no
//! region groups it ("2024 2030", "20000-30000") still needs one. Only plan-less digit groups that
//! passed every other phone rule and have no phone word nearby get here; one `RegexSet` pass picks
//! the regions that could hold the digits, then only those are checked (release build: ~5 µs per such
//! digit group). Compiling the table takes ~0.1 s, done once when a scanner for phones is built.

use std::sync::LazyLock;

use regex::{Regex, RegexBuilder, RegexSet, RegexSetBuilder};

struct Format {
    /// Leading digits of the national number, matched at its start.
    leading: Option<Regex>,
    /// The whole national number, in capture groups.
    pattern: Regex,
    /// Written groups as capture indices ("\\1 \\2\\3" -> [[1], [2, 3]]).
    groups: Vec<Vec<usize>>,
    /// One of libphonenumber's alternate formats, tried after the number's own format.
    alt: bool,
    needs_prefix: bool,
}

struct Plan {
    /// National prefix for parsing ("0", "8", "06"), matched at the start.
    prefix: Option<Regex>,
    /// Replacement for the matched prefix (Captures::expand syntax), when the plan has one.
    transform: String,
    /// Any valid national number of the region (all number types).
    valid: Regex,
    /// The lengths a national number of the region can have (a bit per length).
    lengths: u64,
    /// National formats: does the one a number takes need the national prefix written?
    national: Vec<Format>,
    /// The formats whose groups count as written correctly.
    formats: Vec<Format>,
}

fn compile(pattern: &str, anchor_end: bool) -> Regex {
    let full = if anchor_end {
        format!("^(?:{pattern})$")
    } else {
        format!("^(?:{pattern})")
    };
    RegexBuilder::new(&full)
        .unicode(false)
        .build()
        .unwrap_or_else(|e| panic!("phone_plans.json: bad pattern {pattern:?}: {e}"))
}

fn text(v: &serde_json::Value, k: &str) -> String {
    v[k].as_str().unwrap_or_default().to_string()
}

/// The array at `v` (empty when absent).
fn items(v: &serde_json::Value) -> &[serde_json::Value] {
    v.as_array().map(Vec::as_slice).unwrap_or_default()
}

/// The unsigned numbers of the array at `v`.
fn numbers(v: &serde_json::Value) -> impl Iterator<Item = u64> + '_ {
    items(v).iter().filter_map(serde_json::Value::as_u64)
}

fn optional(pattern: String) -> Option<Regex> {
    Some(pattern)
        .filter(|s| !s.is_empty())
        .map(|s| compile(&s, false))
}

fn formats(v: &serde_json::Value) -> Vec<Format> {
    items(v)
        .iter()
        .map(|f| Format {
            leading: optional(text(f, "leading")),
            pattern: compile(&text(f, "pattern"), true),
            groups: items(&f["groups"])
                .iter()
                .map(|g| numbers(g).map(|i| i as usize).collect())
                .collect(),
            alt: f["alt"].as_bool().unwrap_or(false),
            needs_prefix: f["needs_prefix"].as_bool().unwrap_or(false),
        })
        .collect()
}

/// The regions' plans, and one pass over the digits that tells which of them could hold a number
/// (prefix and valid number, or a valid number alone); plans whose prefix is rewritten (AR, BR, JP,
/// MS) are always tried.
struct Table {
    candidates: RegexSet,
    plans: Vec<Plan>,
}

static TABLE: LazyLock<Table> = LazyLock::new(|| {
    let table: serde_json::Value =
        serde_json::from_str(include_str!("phone_plans.json")).expect("phone_plans.json");
    let rows = table["plans"].as_array().expect("phone_plans.json: plans");
    let patterns = rows
        .iter()
        .map(|p| match (text(p, "prefix"), text(p, "transform")) {
            (_, t) if !t.is_empty() => "^".to_string(),
            (pre, _) if pre.is_empty() => format!("^(?:{})$", text(p, "valid")),
            (pre, _) => format!("^(?:{pre})?(?:{})$", text(p, "valid")),
        });
    let candidates = RegexSetBuilder::new(patterns)
        .unicode(false)
        .build()
        .expect("phone_plans.json: candidate set");
    let plans = rows
        .iter()
        .map(|p| Plan {
            prefix: optional(text(p, "prefix")),
            transform: text(p, "transform"),
            valid: compile(&text(p, "valid"), true),
            lengths: numbers(&p["lengths"])
                .filter(|&n| n < 64)
                .fold(0, |bits, n| bits | 1 << n),
            national: formats(&p["national"]),
            formats: formats(&p["formats"]),
        })
        .collect();
    Table { candidates, plans }
});

/// Compile the table now (it is compiled on first use otherwise); returns the number of regions.
pub fn load() -> usize {
    TABLE.plans.len()
}

/// True if some region writes the digits `groups` (as written, in order, no country code) as one of
/// its valid numbers with exactly these groups.
pub fn exactly_grouped(groups: &[&str]) -> bool {
    let digits: String = groups.concat();
    let table = &*TABLE;
    table
        .candidates
        .matches(&digits)
        .iter()
        .any(|i| plan_groups(&table.plans[i], &digits, groups))
}

impl Plan {
    /// A valid national number of the region; the length check first spares most regexes.
    fn valid(&self, nsn: &str) -> bool {
        nsn.len() < 64 && self.lengths & (1 << nsn.len()) != 0 && self.valid.is_match(nsn)
    }
}

/// The national significant number and whether a national prefix was written before it.
fn national_number(plan: &Plan, digits: &str) -> (String, bool) {
    // libphonenumber strips the prefix unless the number was valid as dialled and is not without it.
    let stripped = plan.prefix.as_ref().and_then(|re| {
        if plan.transform.is_empty() {
            return Some(digits[re.find(digits)?.end()..].to_string());
        }
        let caps = re.captures(digits)?;
        let mut out = String::new();
        caps.expand(&plan.transform, &mut out);
        Some(out + &digits[caps.get(0)?.end()..])
    });
    match stripped {
        Some(s) if !s.is_empty() && (plan.valid(&s) || !plan.valid(digits)) => (s, true),
        _ => (digits.to_string(), false),
    }
}

fn applies(f: &Format, nsn: &str) -> bool {
    f.leading.as_ref().is_none_or(|l| l.is_match(nsn)) && f.pattern.is_match(nsn)
}

fn plan_groups(plan: &Plan, digits: &str, groups: &[&str]) -> bool {
    let (nsn, prefix_written) = national_number(plan, digits);
    if !plan.valid(&nsn) {
        return false;
    }
    let national = plan.national.iter().find(|f| applies(f, &nsn));
    if national.is_some_and(|f| f.needs_prefix) && !prefix_written {
        return false;
    }
    if groups.last().is_some_and(|g| g.contains(nsn.as_str())) {
        return true;
    }
    // The number's own format (the first that applies), then every alternate format that applies.
    let own = plan
        .formats
        .iter()
        .filter(|f| !f.alt)
        .find(|f| applies(f, &nsn));
    let alternates = plan.formats.iter().filter(|f| f.alt && applies(f, &nsn));
    for f in own.into_iter().chain(alternates) {
        if let Some(caps) = f.pattern.captures(&nsn) {
            let expected: Vec<String> = f
                .groups
                .iter()
                .map(|ids| {
                    ids.iter()
                        .filter_map(|&i| caps.get(i))
                        .map(|m| m.as_str())
                        .collect()
                })
                .collect();
            if written_as(groups, &expected) {
                return true;
            }
        }
    }
    false
}

/// libphonenumber's all_number_groups_are_exactly_present: from the end, every expected group but
/// the first is written as it is; the written group before them ends with the first expected group
/// (it may carry the national prefix).
fn written_as(groups: &[&str], expected: &[String]) -> bool {
    let Some((first, rest)) = expected.split_first() else {
        return false;
    };
    if rest.len() >= groups.len() {
        return false;
    }
    let head = groups.len() - rest.len();
    groups[head..].iter().zip(rest).all(|(g, e)| *g == e)
        && groups[head - 1].ends_with(first.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grouped(s: &str) -> bool {
        let groups: Vec<&str> = s
            .split(|c: char| !c.is_ascii_digit())
            .filter(|g| !g.is_empty())
            .collect();
        exactly_grouped(&groups)
    }

    #[test]
    fn the_table_compiles() {
        assert_eq!(load(), 80);
    }

    #[test]
    fn national_formats_as_written() {
        for n in [
            "0494 92 82 32",  // Belgian mobile
            "(71) 4233-6306", // Brazil
            "03 93 92 16 85", // France
            "201 948 1927",   // NANP
            "(08) 8747 6301", // Australia
            "0699 868 88 55", // Austria
        ] {
            assert!(grouped(n), "{n}");
        }
    }

    #[test]
    fn regroupings_and_non_numbers_are_not() {
        for n in [
            "04 949 28 232", // a Belgian number grouped as Belgium never writes it
            "2024 2030",
            "20000 30000",
            "00000 00000",
            "1234567 89",
        ] {
            assert!(!grouped(n), "{n}");
        }
    }
}

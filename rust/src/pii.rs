//! PII and secret detection, masking with stable placeholders, and (streaming) unmasking.
//!
//! One `RegexSet` pass tells which patterns occur at all (usually none), then only those patterns
//! are run to get spans, each candidate is validated (checksums, number plans, reserved ranges)
//! and scored; context words shortly before a match raise the score. All regexes are compiled
//! once per scanner, in ASCII mode (PII values are ASCII; this keeps the lazy DFA on the fast path
//! for any input).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::Ipv6Addr;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use regex::{Regex, RegexBuilder, RegexSet, RegexSetBuilder};

use crate::phone_plans;

/// Texts at least this long are scanned with the GIL released; below it the release/re-acquire
/// round trip (and the wait for the GIL under contention) costs more than the scan.
pub(crate) const DETACH_MIN_BYTES: usize = 4096;

macro_rules! entities {
    ($($variant:ident => $name:literal),+ $(,)?) => {
        /// A detectable entity type; `name()` is its public (Python) spelling.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Entity { $($variant),+ }

        impl Entity {
            pub const ALL: &'static [Entity] = &[$(Entity::$variant),+];

            pub fn name(self) -> &'static str {
                match self { $(Entity::$variant => $name),+ }
            }

            pub fn from_name(name: &str) -> Option<Entity> {
                match name { $($name => Some(Entity::$variant),)+ _ => None }
            }
        }
    };
}

entities! {
    Email => "EMAIL_ADDRESS",
    Phone => "PHONE_NUMBER",
    CreditCard => "CREDIT_CARD",
    Iban => "IBAN_CODE",
    UsSsn => "US_SSN",
    IpAddress => "IP_ADDRESS",
    UkNino => "UK_NINO",
    AwsAccessKey => "AWS_ACCESS_KEY",
    GithubToken => "GITHUB_TOKEN",
    GitlabToken => "GITLAB_TOKEN",
    SlackToken => "SLACK_TOKEN",
    OpenaiKey => "OPENAI_KEY",
    AnthropicKey => "ANTHROPIC_KEY",
    Jwt => "JWT",
    PrivateKey => "PRIVATE_KEY",
}

/// A validated candidate: byte span inside the regex match's haystack, base score, and whether it
/// may only be reported when a context word is near (e.g. a bare 9-digit number as an SSN).
struct Hit {
    start: usize,
    end: usize,
    score: f64,
    needs_context: bool,
}

impl Hit {
    fn new(start: usize, end: usize, score: f64) -> Self {
        Hit {
            start,
            end,
            score,
            needs_context: false,
        }
    }
}

type Validator = fn(&str, usize, usize) -> Option<Hit>;

struct Pattern {
    entity: Entity,
    regex: &'static str,
    validate: Validator,
    context: &'static [&'static str],
}

const PHONE_CTX: &[&str] = &[
    "phone",
    "telephone",
    "tel",
    "mobile",
    "cell",
    "call",
    "fax",
    "contact",
    "whatsapp",
    "sms",
    "reach",
    "dial",
    "ring",
    "desk",
    "landline",
    // a label after the number, as in contact blocks: "781 1704 office", "(37) 788-063-Office"; the
    // whole word only ("$"): "our offices are at 12 High Street" says nothing about a phone
    "office$",
    "pager",
    "hotline",
];
const CARD_CTX: &[&str] = &[
    "card",
    "credit",
    "debit",
    "visa",
    "mastercard",
    "amex",
    "cc",
    "payment",
    "pay",
];
const IBAN_CTX: &[&str] = &["iban", "account", "bank", "transfer", "wire", "sepa"];
const SSN_CTX: &[&str] = &["ssn", "ssns", "social", "security"];
const IP_CTX: &[&str] = &["ip", "ipv4", "ipv6", "address", "server", "host"];
const NINO_CTX: &[&str] = &["nino", "national", "insurance"];
const EMAIL_CTX: &[&str] = &["email", "mail", "contact"];
const SECRET_CTX: &[&str] = &["key", "token", "secret", "password", "api"];

/// Patterns are compiled with `unicode(false)`: `\d`, `\s`, `\b` are ASCII-only.
const PATTERNS: &[Pattern] = &[
    Pattern {
        entity: Entity::Email,
        regex: r"(?i)\b[a-z0-9][a-z0-9._%+\-]{0,63}@(?:[a-z0-9](?:[a-z0-9\-]{0,61}[a-z0-9])?\.)+[a-z]{2,24}\b",
        validate: valid_email,
        context: EMAIL_CTX,
    },
    Pattern {
        entity: Entity::Phone,
        regex: r"(?:\+ ?)?(?:\(\d{1,5}\)|\b\d{1,5})(?:(?: ?[\-./] ?| )?(?:\(\d{1,5}\)|\d{1,5})){0,7}(?: ?(?:x|ext\.?|extension) ?\d{1,6})?\b",
        validate: valid_phone,
        context: PHONE_CTX,
    },
    Pattern {
        entity: Entity::CreditCard,
        regex: r"\b\d(?:[ \-]?\d){11,22}\b",
        validate: valid_card,
        context: CARD_CTX,
    },
    Pattern {
        entity: Entity::Iban,
        regex: r"(?i)\b[a-z]{2}\d{2}(?: ?[a-z0-9]){11,34}\b",
        validate: valid_iban,
        context: IBAN_CTX,
    },
    Pattern {
        entity: Entity::UsSsn,
        regex: r"\b(?:\d{3}-\d{2}-\d{4}|\d{3} \d{2} \d{4}|\d{3}\.\d{2}\.\d{4}|\d{9})\b",
        validate: valid_ssn,
        context: SSN_CTX,
    },
    Pattern {
        entity: Entity::IpAddress,
        regex: r"\b(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\b",
        validate: valid_ipv4,
        context: IP_CTX,
    },
    Pattern {
        entity: Entity::IpAddress,
        regex: r"(?i)(?:[0-9a-f]{1,4}:|:)(?:[0-9a-f]{0,4}:){1,7}(?:[0-9a-f]{1,4}(?:\.\d{1,3}){0,3})?",
        validate: valid_ipv6,
        context: IP_CTX,
    },
    Pattern {
        entity: Entity::UkNino,
        regex: r"\b[A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z] ?\d{2} ?\d{2} ?\d{2} ?[A-D]\b",
        validate: valid_nino,
        context: NINO_CTX,
    },
    Pattern {
        entity: Entity::AwsAccessKey,
        regex: r"\b(?:AKIA|ASIA|ABIA|ACCA|A3T[A-Z0-9])[A-Z0-9]{16}\b",
        validate: secret_95,
        context: SECRET_CTX,
    },
    Pattern {
        entity: Entity::GithubToken,
        regex: r"\b(?:gh[pousr]_[A-Za-z0-9]{36,255}|github_pat_[A-Za-z0-9_]{22,255})\b",
        validate: secret_95,
        context: SECRET_CTX,
    },
    Pattern {
        entity: Entity::GitlabToken,
        regex: r"\b(?:glpat|glptt|gldt|glrt|glft|glsoat|gloas|glcbt|glimt|glagent|glwt)-[A-Za-z0-9_\-]{20,}",
        validate: secret_95,
        context: SECRET_CTX,
    },
    Pattern {
        entity: Entity::SlackToken,
        regex: r"\bxox[abposre]-[A-Za-z0-9\-]{10,}|\bxapp-\d-[A-Za-z0-9\-]{10,}|https://hooks\.slack\.com/(?:services|workflows|triggers)/[A-Za-z0-9_/]{20,}",
        validate: secret_95,
        context: SECRET_CTX,
    },
    Pattern {
        entity: Entity::OpenaiKey,
        regex: r"\bsk-[A-Za-z0-9_\-]{20,}",
        validate: valid_openai_key,
        context: SECRET_CTX,
    },
    Pattern {
        entity: Entity::AnthropicKey,
        regex: r"\bsk-ant-[A-Za-z0-9_\-]{20,}",
        validate: secret_95,
        context: SECRET_CTX,
    },
    Pattern {
        entity: Entity::Jwt,
        regex: r"\beyJ[A-Za-z0-9_\-]{8,}\.eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]*",
        validate: secret_90,
        context: SECRET_CTX,
    },
    Pattern {
        entity: Entity::PrivateKey,
        regex: r"-----BEGIN[A-Z ]{0,30} PRIVATE KEY(?: BLOCK)?-----",
        validate: valid_private_key,
        context: SECRET_CTX,
    },
];

/// Score added when a context word is near the match.
const CONTEXT_BOOST: f64 = 0.3;
const CONTEXT_BEFORE: usize = 48;
const CONTEXT_AFTER: usize = 24;

/// A detection with byte offsets into the scanned text.
#[derive(Clone, Debug, PartialEq)]
pub struct Detection {
    pub entity: Entity,
    pub start: usize,
    pub end: usize,
    pub score: f64,
}

/// Compiled scanner for a fixed set of entity types.
pub struct Scanner {
    set: RegexSet,
    patterns: Vec<(&'static Pattern, Regex)>,
}

impl Scanner {
    pub fn new(entities: &[Entity]) -> Scanner {
        let chosen: Vec<&'static Pattern> = PATTERNS
            .iter()
            .filter(|p| entities.contains(&p.entity))
            .collect();
        let set = RegexSetBuilder::new(chosen.iter().map(|p| p.regex))
            .unicode(false)
            .size_limit(64 << 20)
            .build()
            .expect("PII patterns compile");
        let patterns = chosen
            .into_iter()
            .map(|p| {
                let re = RegexBuilder::new(p.regex)
                    .unicode(false)
                    .build()
                    .expect("PII pattern compiles");
                (p, re)
            })
            .collect();
        if entities.contains(&Entity::Phone) {
            // ~0.1 s once per process: here, at start-up, rather than in the first request that has
            // a plan-less number.
            phone_plans::load();
        }
        Scanner { set, patterns }
    }

    /// The scanner's patterns (for prefilters derived from them).
    pub fn patterns(&self) -> &[String] {
        self.set.patterns()
    }

    /// Non-overlapping detections (higher score, then longer, wins), sorted by start; byte offsets.
    pub fn scan(&self, text: &str) -> Vec<Detection> {
        let mut found = Vec::new();
        for idx in self.set.matches(text).iter() {
            let (pattern, re) = &self.patterns[idx];
            for m in re.find_iter(text) {
                let Some(hit) = (pattern.validate)(text, m.start(), m.end()) else {
                    continue;
                };
                let context = has_context(text, hit.start, hit.end, pattern.context);
                if hit.needs_context && !context {
                    continue;
                }
                let boosted = if context {
                    hit.score + CONTEXT_BOOST
                } else {
                    hit.score
                };
                let score = (boosted.min(1.0) * 100.0).round() / 100.0;
                found.push(Detection {
                    entity: pattern.entity,
                    start: hit.start,
                    end: hit.end,
                    score,
                });
            }
        }
        resolve_overlaps(found)
    }
}

/// Greedy interval selection: best (score, length) first, keep those not overlapping kept ones.
fn resolve_overlaps(mut found: Vec<Detection>) -> Vec<Detection> {
    if found.len() < 2 {
        return found;
    }
    found.sort_by(|a, b| {
        b.score
            .total_cmp(&a.score)
            .then((b.end - b.start).cmp(&(a.end - a.start)))
            .then(a.start.cmp(&b.start))
    });
    let mut kept: BTreeMap<usize, Detection> = BTreeMap::new();
    for d in found {
        let before_ok = kept
            .range(..d.end)
            .next_back()
            .is_none_or(|(_, k)| k.end <= d.start);
        if before_ok {
            kept.insert(d.start, d);
        }
    }
    kept.into_values().collect()
}

/// True if one of `words` starts a word in the `CONTEXT_BEFORE` bytes before the match or the
/// `CONTEXT_AFTER` bytes after it ("Phone: ...", "... (fax)"); a word ending in `$` must be the whole word.
fn has_context(text: &str, start: usize, end: usize, words: &[&str]) -> bool {
    let b = text.as_bytes();
    let before = &b[start.saturating_sub(CONTEXT_BEFORE)..start];
    let after = &b[end..(end + CONTEXT_AFTER).min(b.len())];
    [before, after].iter().any(|window| {
        window
            .split(|c| !c.is_ascii_alphanumeric())
            .filter(|w| !w.is_empty())
            .any(|w| {
                words.iter().any(|c| match c.strip_suffix('$') {
                    Some(whole) => w.eq_ignore_ascii_case(whole.as_bytes()),
                    None => w.len() >= c.len() && w[..c.len()].eq_ignore_ascii_case(c.as_bytes()),
                })
            })
    })
}

// ---------------------------------------------------------------------------------------------
// Validators. Each gets the whole text and the regex match span, returns the accepted span.

/// Secrets are specific enough that the pattern is the validation.
fn secret_95(_: &str, s: usize, e: usize) -> Option<Hit> {
    Some(Hit::new(s, e, 0.95))
}
fn secret_90(_: &str, s: usize, e: usize) -> Option<Hit> {
    Some(Hit::new(s, e, 0.9))
}

/// PEM private keys can be long; the regex matches only the header and the block is found here,
/// within `MAX_PEM` bytes, so repeated unterminated headers can't make the scan quadratic.
fn valid_private_key(text: &str, s: usize, e: usize) -> Option<Hit> {
    const MAX_PEM: usize = 16 * 1024;
    let mut limit = (e + MAX_PEM).min(text.len());
    while !text.is_char_boundary(limit) {
        limit -= 1;
    }
    let window = &text[e..limit];
    if let Some(i) = window.find("-----END") {
        let tail = &window[i + 8..];
        if let Some(j) = tail
            .bytes()
            .take(64)
            .collect::<Vec<_>>()
            .windows(5)
            .position(|w| w == b"-----")
        {
            return Some(Hit::new(s, e + i + 8 + j + 5, 1.0));
        }
    }
    // No END line (truncated paste): take the base64 body that follows the header.
    let body = window
        .bytes()
        .take_while(|c| c.is_ascii_alphanumeric() || b"+/=\\ \r\n\t".contains(c))
        .count();
    let body = window[..body].trim_end().len();
    Some(Hit::new(s, e + body, 1.0))
}

fn valid_openai_key(text: &str, s: usize, e: usize) -> Option<Hit> {
    let key = &text[s..e];
    if key.starts_with("sk-ant-") {
        return None; // Anthropic's pattern owns these.
    }
    let body = &key[3..];
    let has_digit = body.bytes().any(|b| b.is_ascii_digit());
    let has_alpha = body.bytes().any(|b| b.is_ascii_alphabetic());
    (has_digit && has_alpha)
        .then(|| Hit::new(s, e, if key.contains("T3BlbkFJ") { 1.0 } else { 0.9 }))
}

fn valid_email(text: &str, s: usize, e: usize) -> Option<Hit> {
    let v = &text[s..e];
    let (local, _) = v.split_once('@')?;
    if local.ends_with('.') || local.contains("..") {
        return None;
    }
    Some(Hit::new(s, e, 0.95))
}

/// The byte before `s` and the byte at `e` don't continue a number (`1-`, `.5`, digits).
fn isolated(text: &str, s: usize, e: usize) -> bool {
    let b = text.as_bytes();
    let joins = |sep: u8| matches!(sep, b'-' | b'.' | b'/' | b',');
    // Left: no digit, and no "1-" / "J-" (a longer number or an identifier like J-0401000-02), nor
    // "14:" (the seconds of a time: "14:26:26 28/02/11").
    let left = s == 0
        || !(b[s - 1].is_ascii_digit()
            || (s >= 2 && matches!(b[s - 1], b'-' | b'/') && b[s - 2].is_ascii_alphanumeric())
            || (s >= 2 && (joins(b[s - 1]) || b[s - 1] == b':') && b[s - 2].is_ascii_digit()));
    let right = e >= b.len()
        || !(b[e].is_ascii_digit()
            || (e + 1 < b.len() && joins(b[e]) && b[e + 1].is_ascii_digit()));
    left && right
}

/// Runs of ASCII digits in `text[s..e]`, as absolute byte ranges.
fn digit_groups(text: &str, s: usize, e: usize) -> Vec<(usize, usize)> {
    let b = text.as_bytes();
    let mut groups = Vec::new();
    let mut i = s;
    while i < e {
        if b[i].is_ascii_digit() {
            let start = i;
            while i < e && b[i].is_ascii_digit() {
                i += 1;
            }
            groups.push((start, i));
        } else {
            i += 1;
        }
    }
    groups
}

fn digits_of(text: &str, s: usize, e: usize) -> String {
    text[s..e]
        .bytes()
        .filter(u8::is_ascii_digit)
        .map(char::from)
        .collect()
}

fn luhn(digits: &str) -> bool {
    let sum: u32 = digits
        .bytes()
        .rev()
        .enumerate()
        .map(|(i, b)| {
            let d = u32::from(b - b'0');
            if i % 2 == 1 {
                let x = d * 2;
                if x > 9 {
                    x - 9
                } else {
                    x
                }
            } else {
                d
            }
        })
        .sum();
    sum % 10 == 0
}

/// Issuer prefix and length plausible for a payment card (Visa, Mastercard, Amex, Discover,
/// UnionPay, JCB, Diners, Maestro, Mir, RuPay).
fn card_issuer_ok(d: &str) -> bool {
    let n = d.len();
    let p2: u32 = d[..2].parse().unwrap_or(0);
    let p3: u32 = d[..3].parse().unwrap_or(0);
    let p4: u32 = d[..4].parse().unwrap_or(0);
    match d.as_bytes()[0] {
        b'4' => matches!(n, 13 | 16 | 19),
        b'5' => {
            ((51..=55).contains(&p2) && n == 16)
                || (p2 == 50 || (56..=59).contains(&p2)) && (12..=19).contains(&n)
        }
        b'3' => {
            ((p2 == 34 || p2 == 37) && n == 15)
                || ((3528..=3589).contains(&p4) && (16..=19).contains(&n))
                || (((300..=305).contains(&p3) || p3 == 309 || matches!(p2, 36 | 38 | 39))
                    && (14..=19).contains(&n))
        }
        // Discover (6011, 644-649, 65), UnionPay (62), Maestro (6304, 6759, 6761-6763, 6390, 67xx): a
        // bare 12-digit order id starting with 6 is not a card.
        b'6' => {
            ((p4 == 6011 || (644..=649).contains(&p3) || p2 == 65 || p2 == 62)
                && (16..=19).contains(&n))
                || (matches!(p4, 6304 | 6390 | 6759 | 6761 | 6762 | 6763) && (12..=19).contains(&n))
                || (p2 == 67 && (13..=19).contains(&n))
        }
        b'2' => {
            ((2221..=2720).contains(&p4) && n == 16)
                || ((2200..=2204).contains(&p4) && (16..=19).contains(&n))
                || (p4 == 2131 && n == 15)
        }
        b'1' => p4 == 1800 && n == 15,
        _ => false,
    }
}

fn valid_card(text: &str, s: usize, e: usize) -> Option<Hit> {
    if !isolated(text, s, e) {
        return None;
    }
    let groups = digit_groups(text, s, e);
    let seps: HashSet<u8> = text[s..e].bytes().filter(|b| !b.is_ascii_digit()).collect();
    if seps.len() > 1 {
        return None; // mixed separators: not a card number as people write them
    }
    // A number is a card as a whole or not at all: a 16-digit number failing Luhn is not reported
    // by a valid 12-digit prefix. Only a run longer than any card (a card followed by a CVV or a
    // year in the same spacing) backs off whole trailing groups.
    let total = digits_of(text, s, e).len();
    // A trailing group that breaks the grouping (a CVV or a year after 4-4-4-4) may be backed off too.
    let len = |g: &(usize, usize)| g.1 - g.0;
    let mut lowest = groups.len().saturating_sub(1);
    if total > 19 {
        lowest = 0;
    } else {
        while lowest > 0 && len(&groups[lowest]) != len(&groups[0]) {
            lowest -= 1;
        }
    }
    for last in (lowest..groups.len()).rev() {
        let end = groups[last].1;
        let d = digits_of(text, s, end);
        if (12..=19).contains(&d.len()) && luhn(&d) && isolated(text, s, end) {
            // Luhn passes for 1 in 10 random numbers: without a known issuer prefix, only
            // report it when the text talks about cards.
            return Some(if card_issuer_ok(&d) {
                Hit::new(s, end, 0.85)
            } else {
                Hit {
                    start: s,
                    end,
                    score: 0.5,
                    needs_context: true,
                }
            });
        }
        if d.len() < 12 {
            break;
        }
    }
    None
}

fn valid_ssn(text: &str, s: usize, e: usize) -> Option<Hit> {
    if !isolated(text, s, e) {
        return None;
    }
    let d = digits_of(text, s, e);
    let (area, group, serial) = (&d[..3], &d[3..5], &d[5..]);
    let area_n: u32 = area.parse().ok()?;
    if area_n == 0 || area_n == 666 || area_n >= 900 || group == "00" || serial == "0000" {
        return None;
    }
    if d.bytes().all(|b| b == d.as_bytes()[0])
        || matches!(d.as_str(), "123456789" | "078051120" | "219099999")
    {
        return None; // all-same digits and well-known sample numbers
    }
    let bare = e - s == 9;
    Some(Hit {
        start: s,
        end: e,
        score: if bare { 0.4 } else { 0.6 },
        needs_context: bare,
    })
}

fn valid_ipv4(text: &str, s: usize, e: usize) -> Option<Hit> {
    // Reject version-like runs "1.2.3.4.5" and numbers glued to the address; loopback,
    // "any" and broadcast addresses identify nobody.
    let v = &text[s..e];
    let special = v.starts_with("127.") || v == "0.0.0.0" || v == "255.255.255.255";
    (isolated(text, s, e) && !special).then(|| Hit::new(s, e, 0.6))
}

fn valid_ipv6(text: &str, s: usize, e: usize) -> Option<Hit> {
    let b = text.as_bytes();
    let word = |c: u8| c.is_ascii_alphanumeric() || c == b':' || c == b'_';
    if (s > 0 && word(b[s - 1])) || (e < b.len() && word(b[e])) {
        return None; // part of an identifier like `std::vec` or a longer token
    }
    let v = &text[s..e];
    let addr: Ipv6Addr = v.parse().ok()?;
    // Short forms like `a::b` are more often code than addresses.
    let groups = v.split(':').filter(|g| !g.is_empty()).count();
    let hex_digits = v.bytes().filter(u8::is_ascii_hexdigit).count();
    (groups >= 2 && hex_digits >= 5 && !addr.is_unspecified()).then(|| Hit::new(s, e, 0.7))
}

fn valid_nino(text: &str, s: usize, e: usize) -> Option<Hit> {
    let prefix = &text[s..s + 2];
    if matches!(prefix, "BG" | "GB" | "KN" | "NK" | "NT" | "TN" | "ZZ") {
        return None;
    }
    let spaced = text[s..e].contains(' ');
    Some(Hit {
        start: s,
        end: e,
        score: if spaced { 0.6 } else { 0.5 },
        needs_context: false,
    })
}

/// Lengths of IBANs per country (SWIFT IBAN registry).
fn iban_length(country: &str) -> Option<usize> {
    Some(match country {
        "NO" => 15,
        "BE" => 16,
        "DK" | "FI" | "FK" | "FO" | "GL" | "NL" | "SD" => 18,
        "MK" | "SI" => 19,
        "AT" | "BA" | "EE" | "KZ" | "LT" | "LU" | "MN" | "XK" => 20,
        "CH" | "HR" | "LI" | "LV" => 21,
        "BG" | "BH" | "CR" | "DE" | "GB" | "GE" | "IE" | "ME" | "RS" | "VA" => 22,
        "AE" | "GI" | "IL" | "IQ" | "OM" | "SO" | "TL" => 23,
        "AD" | "CZ" | "ES" | "MD" | "PK" | "RO" | "SA" | "SE" | "SK" | "TN" | "VG" => 24,
        "LY" | "PT" | "ST" => 25,
        "IS" | "TR" => 26,
        "BI" | "DJ" | "FR" | "GR" | "IT" | "MC" | "MR" | "SM" => 27,
        "AL" | "AZ" | "BY" | "CY" | "DO" | "GT" | "HN" | "HU" | "LB" | "NI" | "PL" | "SV" => 28,
        "BR" | "EG" | "PS" | "QA" | "UA" => 29,
        "JO" | "KW" | "MU" | "YE" => 30,
        "MT" | "SC" => 31,
        "LC" => 32,
        "RU" => 33,
        _ => return None,
    })
}

fn iban_mod97(iban: &[u8]) -> bool {
    let rotated = iban[4..].iter().chain(&iban[..4]);
    let mut rem: u32 = 0;
    for &c in rotated {
        let v = match c {
            b'0'..=b'9' => u32::from(c - b'0'),
            b'A'..=b'Z' => u32::from(c - b'A') + 10,
            _ => return false,
        };
        rem = if v >= 10 {
            (rem * 100 + v) % 97
        } else {
            (rem * 10 + v) % 97
        };
    }
    rem == 1
}

fn valid_iban(text: &str, s: usize, e: usize) -> Option<Hit> {
    let b = text.as_bytes();
    let country = text[s..s + 2].to_ascii_uppercase();
    let len = iban_length(&country)?;
    // Take exactly `len` alphanumerics (the regex may run on into the next word) and require the
    // IBAN to end at a group boundary.
    let mut chars = Vec::with_capacity(len);
    let mut end = s;
    while end < e && chars.len() < len {
        if b[end] != b' ' {
            chars.push(b[end].to_ascii_uppercase());
        }
        end += 1;
    }
    if chars.len() != len || (end < b.len() && b[end].is_ascii_alphanumeric()) {
        return None;
    }
    let raw = &text[s..end];
    let lower = raw.bytes().any(|c| c.is_ascii_lowercase());
    let upper = raw.bytes().any(|c| c.is_ascii_uppercase());
    if lower && upper {
        return None; // mixed case is a word, not an IBAN
    }
    iban_mod97(&chars).then(|| Hit::new(s, end, 0.95))
}

/// Country calling codes: everything except the unassigned 0, 28x, 83x, 89x blocks.
fn calling_code_ok(d: &str) -> bool {
    !(d.starts_with('0') || d.starts_with("28") || d.starts_with("83") || d.starts_with("89"))
}

fn nanp_ok(d: &[u8]) -> bool {
    d.len() == 10 && (b'2'..=b'9').contains(&d[0]) && (b'2'..=b'9').contains(&d[3])
}

/// How a digit sequence reads as a phone number.
#[derive(PartialEq)]
enum PhoneShape {
    /// Follows a numbering plan (E.164 with a real calling code, NANP, trunk-0, Indian mobile).
    Plan,
    /// 7-12 digits in groups, no plan recognised: a phone number only with context nearby.
    Generic,
}

/// Classify a phone number given as its digit groups (as written); `intl` when written with
/// `+` or `00` (already stripped); `date_seps` when the first groups are joined by `-`, `.` or `/`.
fn phone_shape(groups: &[&str], intl: bool, date_seps: bool) -> Option<PhoneShape> {
    let d: String = groups.concat();
    let b = d.as_bytes();
    if intl {
        if !(8..=15).contains(&d.len()) || !calling_code_ok(&d) {
            return None;
        }
        let nsn = |cc: &str| d.strip_prefix(cc).map(str::len);
        let ok = match b[0] {
            // With an explicit +1 only the area code's leading digit is checked.
            b'1' => d.len() == 11 && (b'2'..=b'9').contains(&b[1]),
            _ if d.starts_with("44") => matches!(nsn("44"), Some(9 | 10)) && b[2] != b'0',
            _ if d.starts_with("49") => matches!(nsn("49"), Some(6..=13)) && b[2] != b'0',
            _ if d.starts_with("33") => nsn("33") == Some(9) && b[2] != b'0',
            _ if d.starts_with("91") => nsn("91") == Some(10) && b[2] >= b'1',
            _ => true,
        };
        return ok.then_some(PhoneShape::Plan);
    }
    if date_seps && groups.len() >= 3 && looks_like_date(&groups[..3]) {
        return None;
    }
    let lens: Vec<usize> = groups.iter().map(|g| g.len()).collect();
    // NANP: [1] 3-3-4, 3-7 or unbroken.
    let nanp_lens = match lens.as_slice() {
        [1, rest @ ..] if b[0] == b'1' => rest,
        [11] if b[0] == b'1' => &[10][..],
        all => all,
    };
    let nanp_digits = if d.len() == 11 && b[0] == b'1' {
        &b[1..]
    } else {
        b
    };
    let nanp = nanp_ok(nanp_digits) && matches!(nanp_lens, [3, 3, 4] | [3, 7] | [10]);
    // Trunk prefix 0 (UK, DE, FR, IN, AU, ...): 0 + area + subscriber, in groups of 2+ digits.
    let grouped = lens.len() <= 5 && (lens.len() == 1 || lens.iter().all(|&l| l >= 2));
    let trunk = b[0] == b'0' && b[1] != b'0' && (9..=12).contains(&b.len()) && grouped;
    // Indian mobile numbers: 98765 43210.
    let india = b.len() == 10
        && (b'6'..=b'9').contains(&b[0])
        && matches!(lens.as_slice(), [5, 5] | [10] | [3, 3, 4]);
    if nanp || trunk || india {
        Some(PhoneShape::Plan)
    } else if (7..=12).contains(&b.len()) && grouped {
        // Plan-less groups, or an unbroken run ("called from 4930123456"): only with context.
        Some(PhoneShape::Generic)
    } else {
        None
    }
}

/// Two numbers of about the same size joined by `-` or `/`, the second larger: a range or a pair
/// ("800-1000", "8086/8088", "1749-1945"), whatever a numbering plan would make of the digits
/// ("984-1234567" is a Nepalese phone number).
fn reads_as_range(groups: &[&str], seps: &[&str]) -> bool {
    let n = |g: &str| g.parse::<u64>().unwrap_or(0);
    matches!((groups, seps), ([a, b], [sep])
        if matches!(sep.trim(), "-" | "/") && n(b) > n(a) && b.len() <= a.len() + 1)
}

/// A capitalised word follows the span after one space, and it is not a label ("Desk:"): the
/// number is a house number before its street's name.
fn names_follow(text: &str, end: usize) -> bool {
    let Some(rest) = text.get(end..).and_then(|r| r.strip_prefix(' ')) else {
        return false;
    };
    if !rest.chars().next().is_some_and(char::is_uppercase) {
        return false;
    }
    let word = rest
        .find(|c: char| !c.is_alphanumeric())
        .unwrap_or(rest.len());
    !rest[word..].starts_with(':')
}

/// 2024-05-01, 01.05.2024, 05/01/24: three groups that parse as a calendar date.
fn looks_like_date(groups: &[&str]) -> bool {
    let n = |g: &str| g.parse::<u32>().unwrap_or(0);
    match groups {
        [y, m, d] if y.len() == 4 && m.len() <= 2 && d.len() <= 2 => {
            (1..=12).contains(&n(m)) && (1..=31).contains(&n(d))
        }
        [a, b, y] if a.len() <= 2 && b.len() <= 2 && matches!(y.len(), 2 | 4) => {
            (1..=31).contains(&n(a)) && (1..=31).contains(&n(b)) && (n(a) <= 12 || n(b) <= 12)
        }
        _ => false,
    }
}

fn valid_phone(text: &str, s: usize, e: usize) -> Option<Hit> {
    let b = text.as_bytes();
    // Split off an extension ("x123", "ext. 12") which is kept in the span but not validated.
    let lower = text[s..e].to_ascii_lowercase();
    let core_end = lower.find(['x', 'e']).map_or(e, |i| {
        let mut j = s + i;
        while j > s && b[j - 1] == b' ' {
            j -= 1;
        }
        j
    });
    let groups = digit_groups(text, s, core_end);
    // Try sub-spans over whole digit groups: leftmost start first, then longest.
    for i in 0..groups.len() {
        for j in (i..groups.len()).rev() {
            let start = if i == 0 {
                s
            } else {
                paren_start(b, groups[i].0)
            };
            let end = if j + 1 == groups.len() {
                if core_end < e {
                    e
                } else {
                    close_paren(b, groups[j].1)
                }
            } else {
                close_paren(b, groups[j].1)
            };
            if let Some(hit) = phone_span(text, start, groups[i].0, groups[j].1, end) {
                return Some(hit);
            }
        }
    }
    None
}

fn paren_start(b: &[u8], digit_start: usize) -> usize {
    if digit_start > 0 && b[digit_start - 1] == b'(' {
        digit_start - 1
    } else {
        digit_start
    }
}

fn close_paren(b: &[u8], digit_end: usize) -> usize {
    if b.get(digit_end) == Some(&b')') {
        digit_end + 1
    } else {
        digit_end
    }
}

/// Check one candidate span; `first`/`last` are the byte bounds of its digits.
fn phone_span(text: &str, start: usize, first: usize, last: usize, end: usize) -> Option<Hit> {
    if !isolated(text, start, end) {
        return None;
    }
    let plus = text[start..first].contains('+');
    // "+46 (0)8 ..." : the parenthesised trunk zero is not dialled internationally.
    let core = text[first..last].replace("(0)", " ");
    let mut groups: Vec<&str> = core
        .split(|c: char| !c.is_ascii_digit())
        .filter(|g| !g.is_empty())
        .collect();
    let mut intl = plus;
    if !plus && groups[0].starts_with("00") && groups.concat().len() > 10 {
        groups[0] = &groups[0][2..];
        if groups[0].is_empty() {
            groups.remove(0);
        }
        intl = true;
    }
    let n_digits: usize = groups.iter().map(|g| g.len()).sum();
    if n_digits < 7 {
        return None;
    }
    let seps: Vec<&str> = core
        .split(|c: char| c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .collect();
    let date_seps = seps.len() >= 2
        && seps[..2]
            .iter()
            .all(|s| matches!(s.trim(), "-" | "." | "/"));
    let shape = phone_shape(&groups, intl, date_seps)?;
    if shape == PhoneShape::Generic
        && (seps.len() == 1 && seps[0] == "." || names_follow(text, end))
    {
        // "12345.6789" is a decimal; "370 3911 Fourth Avenue", "99449 18 Rue ..." are house numbers
        return None;
    }
    let separated = groups.len() > 1 || text[start..first].contains('(');
    let score = match shape {
        _ if intl => 0.6,
        PhoneShape::Plan if separated => 0.5,
        _ => 0.4,
    };
    // Bare digit runs and plan-less groups are phone numbers only if something nearby says so, unless
    // the groups are exactly those a national numbering plan writes and read neither as a range nor
    // as a decimal ("235.41 20": one dot).
    // (The plan table is consulted last, and only when no phone word is nearby anyway.)
    let needs_context = !intl
        && (!separated
            || shape == PhoneShape::Generic
                && (reads_as_range(&groups, &seps)
                    || seps.iter().filter(|s| s.trim() == ".").count() == 1
                    || has_context(text, start, end, PHONE_CTX)
                    || !phone_plans::exactly_grouped(&groups)));
    Some(Hit {
        start,
        end,
        score,
        needs_context,
    })
}

// ---------------------------------------------------------------------------------------------
// Masking and unmasking.

/// Parses `<TYPE_N>`; returns (TYPE, N).
pub fn parse_placeholder(p: &str) -> Option<(&str, u64)> {
    let inner = p.strip_prefix('<')?.strip_suffix('>')?;
    let (ty, n) = inner.rsplit_once('_')?;
    if ty.is_empty()
        || !ty
            .bytes()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == b'_')
    {
        return None;
    }
    if n.is_empty() || !n.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    Some((ty, n.parse().ok()?))
}

/// Result of masking a batch of texts.
pub struct Masked {
    pub texts: Vec<String>,
    pub mapping: HashMap<String, String>,
    pub counts: BTreeMap<&'static str, u64>,
}

impl Scanner {
    /// Replace detected values (of `mask_types`, all if None) with placeholders that are stable
    /// across `texts` and with the `known` value -> placeholder mapping.
    pub fn mask(
        &self,
        texts: &[String],
        mut mapping: HashMap<String, String>,
        mask_types: Option<&HashSet<Entity>>,
    ) -> Masked {
        let mut next: HashMap<String, u64> = HashMap::new();
        for p in mapping.values() {
            if let Some((ty, n)) = parse_placeholder(p) {
                let e = next.entry(ty.to_owned()).or_insert(0);
                *e = (*e).max(n);
            }
        }
        let mut counts = BTreeMap::new();
        let mut out = Vec::with_capacity(texts.len());
        for text in texts {
            let mut masked = String::with_capacity(text.len());
            let mut last = 0;
            for d in self.scan(text) {
                *counts.entry(d.entity.name()).or_insert(0) += 1;
                if mask_types.is_some_and(|m| !m.contains(&d.entity)) {
                    continue;
                }
                let value = &text[d.start..d.end];
                let placeholder = match mapping.get(value) {
                    Some(p) => p.clone(),
                    None => {
                        let n = next.entry(d.entity.name().to_owned()).or_insert(0);
                        *n += 1;
                        let p = format!("<{}_{}>", d.entity.name(), n);
                        mapping.insert(value.to_owned(), p.clone());
                        p
                    }
                };
                masked.push_str(&text[last..d.start]);
                masked.push_str(&placeholder);
                last = d.end;
            }
            masked.push_str(&text[last..]);
            out.push(masked);
        }
        Masked {
            texts: out,
            mapping,
            counts,
        }
    }
}

/// placeholder -> value, accepting either direction: the side whose every entry looks like
/// `<TYPE_N>` is taken as the placeholder side.
pub fn placeholder_map(
    mapping: HashMap<String, String>,
) -> Result<HashMap<String, String>, String> {
    let keys = mapping.keys().all(|k| parse_placeholder(k).is_some());
    let values = mapping.values().all(|v| parse_placeholder(v).is_some());
    if keys {
        Ok(mapping)
    } else if values {
        Ok(mapping.into_iter().map(|(k, v)| (v, k)).collect())
    } else {
        Err("mapping must map values to <TYPE_N> placeholders (or placeholders to values)".into())
    }
}

fn is_placeholder_char(c: u8) -> bool {
    c.is_ascii_uppercase() || c.is_ascii_digit() || c == b'_'
}

/// Replace every known placeholder in `text`; unknown `<...>` text is left alone.
pub fn unmask(text: &str, map: &HashMap<String, String>) -> String {
    let mut out = String::with_capacity(text.len());
    let (done, pending) = unmask_into(text, map, &mut out);
    debug_assert_eq!(done + pending.len(), text.len());
    out.push_str(pending);
    out
}

/// Core of (streaming) unmasking: appends the unmasked form of `text` to `out`, except for a
/// trailing `<[A-Z0-9_]*` that could still become a placeholder, which is returned unprocessed.
fn unmask_into<'a>(
    text: &'a str,
    map: &HashMap<String, String>,
    out: &mut String,
) -> (usize, &'a str) {
    let b = text.as_bytes();
    let mut emitted = 0;
    let mut i = 0;
    while let Some(off) = memchr_lt(&b[i..]) {
        let lt = i + off;
        let mut j = lt + 1;
        while j < b.len() && is_placeholder_char(b[j]) {
            j += 1;
        }
        if j == b.len() {
            out.push_str(&text[emitted..lt]);
            return (lt, &text[lt..]);
        }
        if b[j] == b'>' {
            if let Some(value) = map.get(&text[lt..=j]) {
                out.push_str(&text[emitted..lt]);
                out.push_str(value);
                emitted = j + 1;
                i = j + 1;
                continue;
            }
        }
        i = lt + 1;
    }
    out.push_str(&text[emitted..]);
    (text.len(), "")
}

fn memchr_lt(b: &[u8]) -> Option<usize> {
    b.iter().position(|&c| c == b'<')
}

/// Incremental unmasking for streamed text: holds back only an unfinished `<TYPE_` that is a
/// prefix of some known placeholder.
pub struct Unmasker {
    map: HashMap<String, String>,
    /// Sorted placeholders, for the "is this a prefix of a placeholder" check.
    sorted: Vec<String>,
    pending: String,
}

impl Unmasker {
    pub fn new(map: HashMap<String, String>) -> Self {
        let mut sorted: Vec<String> = map.keys().cloned().collect();
        sorted.sort();
        Unmasker {
            map,
            sorted,
            pending: String::new(),
        }
    }

    fn is_prefix(&self, s: &str) -> bool {
        let i = self.sorted.partition_point(|p| p.as_str() < s);
        self.sorted.get(i).is_some_and(|p| p.starts_with(s))
    }

    pub fn feed(&mut self, chunk: &str) -> String {
        let buf = if self.pending.is_empty() {
            chunk.to_owned()
        } else {
            let mut b = std::mem::take(&mut self.pending);
            b.push_str(chunk);
            b
        };
        let mut out = String::with_capacity(buf.len());
        let mut rest = buf.as_str();
        loop {
            let (_, tail) = unmask_into(rest, &self.map, &mut out);
            if tail.is_empty() || self.is_prefix(tail) {
                self.pending = tail.to_owned();
                return out;
            }
            // Can never complete to a known placeholder: emit its '<' and go on after it.
            out.push('<');
            rest = &tail[1..];
        }
    }

    pub fn flush(&mut self) -> String {
        std::mem::take(&mut self.pending)
    }

    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }
}

// ---------------------------------------------------------------------------------------------
// Python bindings.

fn parse_entities(names: Option<Vec<String>>) -> PyResult<Vec<Entity>> {
    match names {
        None => Ok(Entity::ALL.to_vec()),
        Some(names) => names
            .iter()
            .map(|n| {
                Entity::from_name(n).ok_or_else(|| {
                    PyValueError::new_err(format!(
                        "unknown PII entity type {n:?}; supported: {}",
                        Entity::ALL
                            .iter()
                            .map(|e| e.name())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ))
                })
            })
            .collect(),
    }
}

/// Byte offsets -> Python code point offsets (identity for ASCII text).
fn to_char_offsets(text: &str, dets: &[Detection]) -> Vec<(usize, usize)> {
    if text.is_ascii() {
        return dets.iter().map(|d| (d.start, d.end)).collect();
    }
    let (mut byte, mut chars) = (0, 0);
    let mut at = |pos: usize| {
        chars += text[byte..pos].chars().count();
        byte = pos;
        chars
    };
    dets.iter().map(|d| (at(d.start), at(d.end))).collect()
}

/// (masked texts, value -> placeholder mapping, detections per type)
type MaskResult = (
    Vec<String>,
    HashMap<String, String>,
    BTreeMap<&'static str, u64>,
);

#[pyclass(name = "PiiScanner", module = "gateway._core", frozen)]
pub struct PyPiiScanner {
    scanner: Scanner,
    entities: Vec<Entity>,
}

#[pymethods]
impl PyPiiScanner {
    #[new]
    #[pyo3(signature = (entities = None))]
    fn new(entities: Option<Vec<String>>) -> PyResult<Self> {
        let entities = parse_entities(entities)?;
        Ok(PyPiiScanner {
            scanner: Scanner::new(&entities),
            entities,
        })
    }

    #[staticmethod]
    fn entity_types() -> Vec<&'static str> {
        Entity::ALL.iter().map(|e| e.name()).collect()
    }

    #[getter]
    fn entities(&self) -> Vec<&'static str> {
        self.entities.iter().map(|e| e.name()).collect()
    }

    fn scan(&self, py: Python<'_>, text: &str) -> Vec<(&'static str, usize, usize, f64)> {
        let run = || {
            let dets = self.scanner.scan(text);
            let offsets = to_char_offsets(text, &dets);
            dets.iter()
                .zip(offsets)
                .map(|(d, (s, e))| (d.entity.name(), s, e, d.score))
                .collect()
        };
        if text.len() >= DETACH_MIN_BYTES {
            py.detach(run)
        } else {
            run()
        }
    }

    #[pyo3(signature = (texts, known, mask_types = None))]
    fn mask(
        &self,
        py: Python<'_>,
        texts: Vec<String>,
        known: HashMap<String, String>,
        mask_types: Option<HashSet<String>>,
    ) -> PyResult<MaskResult> {
        let mask_types = match mask_types {
            None => None,
            Some(m) => Some(
                parse_entities(Some(m.into_iter().collect()))?
                    .into_iter()
                    .collect::<HashSet<_>>(),
            ),
        };
        let total: usize = texts.iter().map(String::len).sum();
        let run = || self.scanner.mask(&texts, known, mask_types.as_ref());
        let m = if total >= DETACH_MIN_BYTES {
            py.detach(run)
        } else {
            run()
        };
        Ok((m.texts, m.mapping, m.counts))
    }

    fn __repr__(&self) -> String {
        format!("PiiScanner({:?})", self.entities())
    }
}

/// `unmask(text, mapping)`: placeholders -> original values.
#[pyfunction(name = "unmask")]
fn py_unmask(py: Python<'_>, text: &str, mapping: HashMap<String, String>) -> PyResult<String> {
    let map = placeholder_map(mapping).map_err(PyValueError::new_err)?;
    if text.len() >= DETACH_MIN_BYTES {
        Ok(py.detach(|| unmask(text, &map)))
    } else {
        Ok(unmask(text, &map))
    }
}

#[pyclass(name = "StreamUnmasker", module = "gateway._core")]
pub struct PyStreamUnmasker {
    inner: Unmasker,
}

#[pymethods]
impl PyStreamUnmasker {
    #[new]
    fn new(mapping: HashMap<String, String>) -> PyResult<Self> {
        let map = placeholder_map(mapping).map_err(PyValueError::new_err)?;
        Ok(PyStreamUnmasker {
            inner: Unmasker::new(map),
        })
    }

    fn feed(&mut self, chunk: &str) -> String {
        self.inner.feed(chunk)
    }

    fn flush(&mut self) -> String {
        self.inner.flush()
    }

    /// Bytes currently held back (an unfinished placeholder).
    #[getter]
    fn pending(&self) -> usize {
        self.inner.pending_len()
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyPiiScanner>()?;
    m.add_class::<PyStreamUnmasker>()?;
    m.add_function(wrap_pyfunction!(py_unmask, m)?)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(text: &str) -> Vec<(&'static str, &str)> {
        Scanner::new(Entity::ALL)
            .scan(text)
            .into_iter()
            .map(|d| (d.entity.name(), &text[d.start..d.end]))
            .collect()
    }

    #[test]
    fn finds_structured_types() {
        let t = "Mail john.doe@example.com, call +1 (415) 555-2671 or 020 7946 0958. \
                 Card 4111 1111 1111 1111, IBAN GB82 WEST 1234 5698 7654 32, SSN 123-45-6788, \
                 host 192.168.10.4 / fe80::1ff:fe23:4567:890a, NINO AB 12 34 56 C.";
        let found = scan(t);
        assert!(
            found.contains(&("EMAIL_ADDRESS", "john.doe@example.com")),
            "{found:?}"
        );
        assert!(
            found.contains(&("PHONE_NUMBER", "+1 (415) 555-2671")),
            "{found:?}"
        );
        assert!(
            found.contains(&("PHONE_NUMBER", "020 7946 0958")),
            "{found:?}"
        );
        assert!(
            found.contains(&("CREDIT_CARD", "4111 1111 1111 1111")),
            "{found:?}"
        );
        assert!(
            found.contains(&("IBAN_CODE", "GB82 WEST 1234 5698 7654 32")),
            "{found:?}"
        );
        assert!(found.contains(&("US_SSN", "123-45-6788")), "{found:?}");
        assert!(found.contains(&("IP_ADDRESS", "192.168.10.4")), "{found:?}");
        assert!(
            found.contains(&("IP_ADDRESS", "fe80::1ff:fe23:4567:890a")),
            "{found:?}"
        );
        assert!(found.contains(&("UK_NINO", "AB 12 34 56 C")), "{found:?}");
    }

    #[test]
    fn rejects_invalid_checksums_and_ranges() {
        assert!(scan("card 4111 1111 1111 1112").is_empty());
        assert!(scan("iban GB82 WEST 1234 5698 7654 33").is_empty());
        for ssn in [
            "000-12-3456",
            "666-12-3456",
            "912-12-3456",
            "123-00-4567",
            "123-45-0000",
        ] {
            assert!(scan(&format!("ssn {ssn}")).is_empty(), "{ssn}");
        }
        assert!(scan("version 1.2.3.4.5 and 2023-01-15").is_empty());
        assert!(scan("std::vector and a::b").is_empty());
    }

    #[test]
    fn bare_digits_need_context() {
        assert!(scan("order 4155552671 shipped").is_empty());
        assert_eq!(
            scan("phone: 4155552671"),
            vec![("PHONE_NUMBER", "4155552671")]
        );
        assert!(scan("id 123456788").is_empty());
        assert_eq!(scan("my ssn is 123456788"), vec![("US_SSN", "123456788")]);
    }

    #[test]
    fn office_is_a_phone_label_only_as_the_whole_word() {
        assert_eq!(scan("781 1704 office"), vec![("PHONE_NUMBER", "781 1704")]);
        assert!(scan("our offices are at 4155552671 Main").is_empty());
    }

    #[test]
    fn house_numbers_before_a_street_name_are_not_phones() {
        assert!(scan("call in at 370 3911 Fourth Avenue").is_empty());
        assert!(scan("contact us at 99449 18 Rue de Tanger").is_empty());
        assert_eq!(
            scan("Mobile: 737 219 628 Desk: 5403926876"),
            vec![
                ("PHONE_NUMBER", "737 219 628"),
                ("PHONE_NUMBER", "5403926876")
            ]
        );
    }

    #[test]
    fn a_decimal_is_not_a_phone_number() {
        assert!(scan("call the number 12345.6789").is_empty());
    }

    #[test]
    fn a_number_grouped_as_a_national_plan_writes_it_needs_no_phone_word() {
        for p in [
            "0494 92 82 32",
            "(71) 4233-6306",
            "467 3395",
            "723 813 266",
            "984-1234567",
        ] {
            assert_eq!(
                scan(&format!("Write to her at {p} today.")),
                vec![("PHONE_NUMBER", p)],
                "{p}"
            );
        }
        // The same digits grouped as no plan writes them, ranges, decimals and times still need one.
        for t in [
            "Write to her at 49 492 82 32 today.",
            "Write to her at 7238 132 66 today.",
            "rent in the range of 20000-30000 per month",
            "the 8086/8088 bus cycle",
            "the period 1749-1945",
            "FALSE 196.17 tr 235.41 20 4 USA",
            "[14:26:26 28/02/11] ok",
        ] {
            assert_eq!(scan(t), vec![], "{t}");
        }
        assert_eq!(
            scan("tel 49 492 82 32"),
            vec![("PHONE_NUMBER", "49 492 82 32")]
        );
    }

    #[test]
    fn phone_formats() {
        for p in [
            "+44 20 7946 0958",
            "+49 30 1234567",
            "+49 (0)30 12345678",
            "+33 6 12 34 56 78",
            "06 12 34 56 78",
            "+91 98765 43210",
            "098765 43210",
            "030/1234567",
            "(415) 555-2671",
            "415.555.2671",
            "1-415-555-2671",
            "+14155552671",
            "345-899-3560x4587",
            "0049 30 1234567",
        ] {
            assert_eq!(scan(&format!("tel {p}.")), vec![("PHONE_NUMBER", p)], "{p}");
        }
    }

    #[test]
    fn iban_countries() {
        for iban in [
            "DE89 3704 0044 0532 0130 00",
            "FR1420041010050500013M02606",
            "NO9386011117947",
            "gb82west12345698765432",
        ] {
            assert_eq!(
                scan(&format!("pay {iban} now")),
                vec![("IBAN_CODE", iban)],
                "{iban}"
            );
        }
    }

    #[test]
    fn secrets() {
        let keys = [
            ("AWS_ACCESS_KEY", "AKIAIOSFODNN7EXAMPLE".to_string()),
            ("GITHUB_TOKEN", format!("ghp_{}", "a1B2".repeat(9))),
            ("GITLAB_TOKEN", "glpat-xY12ab34CD56ef78GH90".to_string()),
            ("SLACK_TOKEN", "xoxb-1234567890-abcdefghij".to_string()),
            ("OPENAI_KEY", format!("sk-proj-{}", "Ab1".repeat(20))),
            (
                "ANTHROPIC_KEY",
                format!("sk-ant-api03-{}", "Zx9".repeat(30)),
            ),
            (
                "JWT",
                "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.abcDEF123_-x".to_string(),
            ),
            (
                "PRIVATE_KEY",
                "-----BEGIN RSA PRIVATE KEY-----\nMIIBOgIBAAJBAK\n-----END RSA PRIVATE KEY-----"
                    .to_string(),
            ),
            (
                "PRIVATE_KEY",
                r"-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXk\nAAAA".to_string(),
            ),
        ];
        for (ty, key) in keys {
            assert_eq!(scan(&format!("x = \"{key}\"")), vec![(ty, key.as_str())]);
        }
    }

    #[test]
    fn unterminated_pem_headers_stay_linear() {
        let text = "-----BEGIN PRIVATE KEY----- ".repeat(2000);
        let found = scan(&text);
        assert_eq!(found.len(), 2000);
        assert!(found
            .iter()
            .all(|(_, v)| *v == "-----BEGIN PRIVATE KEY-----"));
    }

    #[test]
    fn overlaps_prefer_better_match() {
        // A card number contains phone-like digit groups; the card wins.
        assert_eq!(
            scan("card 4111-1111-1111-1111"),
            vec![("CREDIT_CARD", "4111-1111-1111-1111")]
        );
    }

    #[test]
    fn context_raises_score() {
        let s = Scanner::new(&[Entity::UsSsn]);
        let plain = s.scan("x 123-45-6788")[0].score;
        let ctx = s.scan("SSN: 123-45-6788")[0].score;
        assert!(ctx > plain);
    }

    #[test]
    fn mask_is_stable_and_continues_numbering() {
        let s = Scanner::new(Entity::ALL);
        let known = HashMap::from([("a@x.io".to_string(), "<EMAIL_ADDRESS_4>".to_string())]);
        let texts = vec![
            "a@x.io and b@y.io".to_string(),
            "b@y.io again, a@x.io".to_string(),
        ];
        let m = s.mask(&texts, known, None);
        assert_eq!(m.texts[0], "<EMAIL_ADDRESS_4> and <EMAIL_ADDRESS_5>");
        assert_eq!(m.texts[1], "<EMAIL_ADDRESS_5> again, <EMAIL_ADDRESS_4>");
        assert_eq!(m.counts["EMAIL_ADDRESS"], 4);
        let back = placeholder_map(m.mapping).unwrap();
        assert_eq!(unmask(&m.texts[0], &back), texts[0]);
    }

    #[test]
    fn mask_types_filter() {
        let s = Scanner::new(Entity::ALL);
        let only = HashSet::from([Entity::Email]);
        let m = s.mask(
            &["a@x.io 123-45-6788".to_string()],
            HashMap::new(),
            Some(&only),
        );
        assert_eq!(m.texts[0], "<EMAIL_ADDRESS_1> 123-45-6788");
        assert_eq!(m.counts["US_SSN"], 1);
    }

    #[test]
    fn streaming_unmask_matches_whole() {
        let map = HashMap::from([
            ("<EMAIL_ADDRESS_1>".to_string(), "a@x.io".to_string()),
            (
                "<PHONE_NUMBER_12>".to_string(),
                "+1 415 555 2671".to_string(),
            ),
        ]);
        let text = "Hi <EMAIL_ADDRESS_1>, <<PHONE_NUMBER_12> <EMAIL_ADDRESS_2> <PHONE_NUMBER_1";
        let whole = unmask(text, &map);
        for size in 1..text.len() {
            let mut u = Unmasker::new(map.clone());
            let mut out = String::new();
            for chunk in text.as_bytes().chunks(size) {
                out += &u.feed(std::str::from_utf8(chunk).unwrap());
                assert!(u.pending_len() <= "<PHONE_NUMBER_12>".len());
            }
            out += &u.flush();
            assert_eq!(out, whole, "chunk size {size}");
        }
    }

    #[test]
    fn unicode_offsets() {
        let text = "héllo ☎ a@x.io";
        let dets = Scanner::new(Entity::ALL).scan(text);
        let offs = to_char_offsets(text, &dets);
        let chars: Vec<char> = text.chars().collect();
        let (s, e) = offs[0];
        assert_eq!(chars[s..e].iter().collect::<String>(), "a@x.io");
    }
}

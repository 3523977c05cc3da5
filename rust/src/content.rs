//! Output content scanner: what a model's answer must not carry.
//!
//! Categories: text classes from a hashed n-gram linear model shipped as package data (sexual,
//! sexual/minors, hate, harassment, violence, self-harm, dangerous — trained by
//! `scripts/train_content.py`), dangerous-instruction phrases (weapons, malware), secrets (API
//! keys, tokens, private keys — the PII scanner's secret types), PII in the output (its personal
//! types) and canary tokens (`gwcanary-` + 16 hex digits) that the gateway plants in system
//! prompts, so a leaked system prompt is caught verbatim.
//!
//! `ContentStream` scans a stream incrementally: text is released up to the last whitespace (a
//! secret is one token, so it is never released half-scanned), span categories are matched over
//! the released text plus a bounded look-behind, the classifier rescores the last `WINDOW` bytes
//! every `RESCORE` new bytes and at the end.

use std::sync::LazyLock;

use aho_corasick::AhoCorasick;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use regex::Regex;

use crate::pii::{Entity, Scanner, DETACH_MIN_BYTES};
use crate::prefilter;
use crate::textnorm::{normalize, LinearModel};

pub const SECRET_TYPES: &[Entity] = &[
    Entity::AwsAccessKey,
    Entity::GithubToken,
    Entity::GitlabToken,
    Entity::SlackToken,
    Entity::OpenaiKey,
    Entity::AnthropicKey,
    Entity::Jwt,
    Entity::PrivateKey,
];
pub const PII_TYPES: &[Entity] = &[
    Entity::Email,
    Entity::Phone,
    Entity::CreditCard,
    Entity::Iban,
    Entity::UsSsn,
    Entity::UkNino,
];

/// Dangerous-instruction phrases (normalised text): weapons, explosives, malware, drugs.
const DANGEROUS: &[&str] = &[
    "pipe bomb",
    "nerve agent",
    "sarin",
    "ricin",
    "mustard gas",
    "detonator",
    "ammonium nitrate and fuel oil",
    "thermite",
    "untraceable gun",
    "ghost gun",
    "3d printed gun",
    "full auto conversion",
    "ransomware",
    "keylogger",
    "reverse shell",
    "credential stealer",
    "botnet",
    "disable antivirus",
    "privilege escalation exploit",
    "synthesize methamphetamine",
    "cook meth",
    "extract ricin",
    "anthrax spores",
    "weaponize",
];
const DANGEROUS_WEIGHT: f32 = 0.6;

const CANARY: &str = r"gwcanary-[0-9a-f]{16}";
static CANARY_RE: LazyLock<Regex> = LazyLock::new(|| Regex::new(CANARY).expect("canary regex"));
static DANGEROUS_AC: LazyLock<AhoCorasick> =
    LazyLock::new(|| AhoCorasick::new(DANGEROUS).expect("dangerous phrases"));

/// A finding: category, score in [0, 1], byte span for span categories (secrets, pii, canary),
/// and what matched (entity type or rule).
#[derive(Clone, Debug, PartialEq)]
pub struct Finding {
    pub category: &'static str,
    pub score: f32,
    pub span: Option<(usize, usize)>,
    pub detail: String,
}

pub struct ContentScanner {
    secrets: Scanner,
    pii: Scanner,
    gate: SpanGate,
    model: Option<LinearModel>,
    names: Vec<&'static str>,
    /// `categories()`, kept: a floor is looked up by a finding's place in it.
    categories: Vec<&'static str>,
}

/// The span categories, last in `categories()` in this order.
const SPAN_CATEGORIES: [&str; 3] = ["secrets", "pii", "canary"];

/// Which span scanners a text needs at all, from what their patterns' matches must contain
/// (`prefilter`): secrets and canaries start with one of a few literals (`AKIA`, `ghp_`, `sk-`,
/// `eyJ`, `-----BEGIN`, `gwcanary-`, ...), and every personal-data pattern needs a digit or an
/// `@`. An answer that is plain prose then skips the secret and PII automata, whose tables would
/// otherwise be reloaded into the CPU caches for every request. A pattern from which nothing
/// can be derived turns its gate off (always scanned).
struct SpanGate {
    /// Literal prefixes of every secret pattern and of the canary (`None`: always scan).
    secret_prefixes: Option<AhoCorasick>,
    /// The same literals, for telling whether a stream's last, unfinished word may still become one,
    /// and which of them a match may begin with inside a word (the canary's, punctuation-led ones).
    secret_literals: Vec<Vec<u8>>,
    anywhere: Vec<usize>,
    /// Bytes one of which every PII pattern's match holds (`None`: always scan).
    pii_bytes: Option<[bool; 256]>,
}

impl SpanGate {
    fn new(secrets: &Scanner, pii: &Scanner) -> SpanGate {
        let mut lits = vec![CANARY.as_bytes()[..9].to_vec()]; // "gwcanary-"
        let mut finite = true;
        for p in secrets.patterns() {
            match prefilter::prefixes(p, 64) {
                Some(ps) => lits.extend(ps),
                None => finite = false,
            }
        }
        let secret_prefixes = finite.then(|| AhoCorasick::new(&lits).expect("secret prefixes"));
        let secret_literals = if finite { lits } else { Vec::new() };
        // literal 0 is the canary's (its pattern has no `\b`); the secret patterns start at a word
        // boundary unless their literal starts with punctuation
        let anywhere = (0..secret_literals.len())
            .filter(|&k| k == 0 || secret_literals[k].first().is_none_or(|&b| !is_word(b)))
            .collect();
        let set = prefilter::byte_set(|b| b.is_ascii_digit() || b == b'@');
        let pii_bytes = pii
            .patterns()
            .iter()
            .all(|p| prefilter::needs_one_of(p, &set))
            .then_some(set);
        SpanGate {
            secret_prefixes,
            secret_literals,
            anywhere,
            pii_bytes,
        }
    }

    /// Whether `tail` (the text after a stream's last whitespace) holds a secret or canary literal,
    /// or ends with the beginning of one where a match may start, so that the next chunk may
    /// complete it. The secret patterns start at a word boundary (`\b`) unless their literal begins
    /// with punctuation (`-----BEGIN`); the canary may start anywhere. Without the literals (a
    /// pattern with no finite prefix) every tail may.
    fn may_start_secret(&self, tail: &str) -> bool {
        let Some(ac) = &self.secret_prefixes else {
            return true;
        };
        if ac.is_match(tail) {
            return true;
        }
        let t = tail.as_bytes();
        let begins = |rest: &[u8], l: &Vec<u8>| rest.len() < l.len() && l.starts_with(rest);
        (0..t.len()).any(|i| {
            let rest = &t[i..];
            if i == 0 || !is_word(t[i - 1]) {
                self.secret_literals.iter().any(|l| begins(rest, l))
            } else {
                self.anywhere
                    .iter()
                    .any(|&k| begins(rest, &self.secret_literals[k]))
            }
        })
    }

    /// (secrets or canary possible, PII possible) in `text`.
    fn check(&self, text: &str) -> (bool, bool) {
        let secrets = self
            .secret_prefixes
            .as_ref()
            .is_none_or(|ac| ac.is_match(text));
        let pii = self
            .pii_bytes
            .as_ref()
            .is_none_or(|set| text.bytes().any(|b| set[b as usize]));
        (secrets, pii)
    }
}

/// A byte of a regex word (`\w` in ASCII).
fn is_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// Category names the model may carry, with their public spelling.
const TEXT_CATEGORIES: &[&str] = &[
    "sexual",
    "sexual/minors",
    "hate",
    "harassment",
    "violence",
    "self-harm",
    "dangerous",
];

impl ContentScanner {
    pub fn new(model: Option<LinearModel>) -> Result<ContentScanner, String> {
        let mut names = Vec::new();
        if let Some(m) = &model {
            for c in &m.classes {
                let n = TEXT_CATEGORIES
                    .iter()
                    .find(|t| **t == c.name)
                    .ok_or_else(|| format!("unknown content category {:?} in model", c.name))?;
                names.push(*n);
            }
        }
        let secrets = Scanner::new(SECRET_TYPES);
        let pii = Scanner::new(PII_TYPES);
        let gate = SpanGate::new(&secrets, &pii);
        let mut categories = names.clone();
        if !categories.contains(&"dangerous") {
            categories.push("dangerous");
        }
        categories.extend(SPAN_CATEGORIES);
        Ok(ContentScanner {
            secrets,
            pii,
            gate,
            model,
            names,
            categories,
        })
    }

    pub fn categories(&self) -> &[&'static str] {
        &self.categories
    }

    /// The span categories `want` asks for (secrets, pii, canary) in `text`, byte offsets.
    fn spans_of(&self, text: &str, want: [bool; 3], out: &mut Vec<Finding>) {
        if !want.iter().any(|&w| w) {
            return;
        }
        let (gate_secrets, gate_pii) = self.gate.check(text);
        let (secrets, pii) = (gate_secrets && want[0], gate_pii && want[1]);
        for (category, scanner, possible) in
            [("secrets", &self.secrets, secrets), ("pii", &self.pii, pii)]
        {
            if !possible {
                continue;
            }
            out.extend(scanner.scan(text).into_iter().map(|d| Finding {
                category,
                score: d.score as f32,
                span: Some((d.start, d.end)),
                detail: d.entity.name().to_string(),
            }));
        }
        if gate_secrets && want[2] {
            for m in CANARY_RE.find_iter(text) {
                out.push(Finding {
                    category: "canary",
                    score: 1.0,
                    span: Some((m.start(), m.end())),
                    detail: "CANARY".to_string(),
                });
            }
        }
    }

    /// Text categories of one (not yet normalised) text: every model class's probability,
    /// raised by dangerous phrases.
    pub fn classes(&self, text: &str, out: &mut Vec<Finding>) {
        let norm = normalize(text);
        let mut dangerous = 0.0f32;
        let mut phrase = None;
        if let Some(m) = DANGEROUS_AC.find(&norm) {
            dangerous = DANGEROUS_WEIGHT;
            phrase = Some(DANGEROUS[m.pattern().as_usize()]);
        }
        if let Some(m) = &self.model {
            for (p, name) in m.predict(&norm).into_iter().zip(&self.names) {
                if *name == "dangerous" {
                    dangerous = 1.0 - (1.0 - dangerous) * (1.0 - p);
                } else {
                    out.push(Finding {
                        category: name,
                        score: p,
                        span: None,
                        detail: "classifier".to_string(),
                    });
                }
            }
        }
        out.push(Finding {
            category: "dangerous",
            score: dangerous,
            span: None,
            detail: phrase.map_or("classifier".to_string(), |p| format!("phrase:{p}")),
        });
    }

    pub fn scan(&self, text: &str) -> Vec<Finding> {
        self.scan_with(text, None)
    }

    /// `scan`, reporting only findings that reach their category's floor (`floors`: one per
    /// `categories()` entry, infinite for a category the caller does not act on). The parts no
    /// floor can use are not run: a profile that acts on secrets alone never loads the classifier.
    pub fn scan_with(&self, text: &str, floors: Option<&[f32]>) -> Vec<Finding> {
        let mut out = Vec::new();
        self.spans_of(text, self.span_wants(floors), &mut out);
        if self.wants_classes(floors) {
            self.classes(text, &mut out);
        }
        self.keep_reaching(floors, &mut out);
        out
    }

    /// Where the span categories start in `categories()` (the text categories come first).
    fn first_span(&self) -> usize {
        self.categories.len() - SPAN_CATEGORIES.len()
    }

    fn span_wants(&self, floors: Option<&[f32]>) -> [bool; 3] {
        let first = self.first_span();
        floors.map_or([true; 3], |f| {
            std::array::from_fn(|k| f[first + k].is_finite())
        })
    }

    fn wants_classes(&self, floors: Option<&[f32]>) -> bool {
        floors.is_none_or(|f| f[..self.first_span()].iter().any(|x| x.is_finite()))
    }

    fn keep_reaching(&self, floors: Option<&[f32]>, out: &mut Vec<Finding>) {
        if let Some(f) = floors {
            out.retain(|x| {
                let at = self.categories.iter().position(|c| *c == x.category);
                at.is_some_and(|i| x.score >= f[i])
            });
        }
    }
}

/// Bytes of already released text re-scanned with new text (a phone number or e-mail split by
/// a space-free chunk boundary is still whole in the window).
pub const LOOK_BEHIND: usize = 96;
/// The classifier's window over the end of the stream, and how often it rescores.
pub const WINDOW: usize = 1024;
pub const RESCORE: usize = 256;
/// Longest run without whitespace held back before it is released anyway.
pub const MAX_HOLD: usize = 4096;

/// What a stream holds back before release, so that a span the profile cuts out (redact, block) is
/// never sent half-scanned. A span found in text already released can still be flagged, through the
/// look-behind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hold {
    /// Everything after the last whitespace: any word may be the start of an e-mail address or
    /// another personal-data span (PII is cut).
    Word,
    /// The last word only when it holds or ends with the beginning of a secret or canary literal
    /// (`sk-`, `AKIA`, `gwcanary-`, ...): only secrets or canaries are cut. Prose tokens then
    /// pass as they come, with no word of delay and their bytes untouched.
    Secrets,
    /// Nothing: no span category is cut.
    Nothing,
}

pub struct ContentStream {
    hold: Hold,
    pending: String,
    /// The last released bytes (at most WINDOW), for look-behind and rescoring.
    recent: String,
    since_score: usize,
}

impl Default for ContentStream {
    fn default() -> Self {
        Self::new(Hold::Word)
    }
}

fn tail_from(s: &str, keep: usize) -> usize {
    let mut at = s.len().saturating_sub(keep);
    while !s.is_char_boundary(at) {
        at += 1;
    }
    at
}

impl ContentStream {
    pub fn new(hold: Hold) -> Self {
        ContentStream {
            hold,
            pending: String::new(),
            recent: String::new(),
            since_score: 0,
        }
    }

    /// Feed a chunk: returns the text now released and findings in it. Span findings carry byte
    /// offsets into the released text; a span that began in the look-behind starts at 0.
    pub fn feed(
        &mut self,
        scanner: &ContentScanner,
        chunk: &str,
        last: bool,
    ) -> (String, Vec<Finding>) {
        self.feed_with(scanner, chunk, last, None)
    }

    /// `feed`, keeping only findings that reach their floors (see `ContentScanner::scan_with`).
    pub fn feed_with(
        &mut self,
        scanner: &ContentScanner,
        chunk: &str,
        last: bool,
        floors: Option<&[f32]>,
    ) -> (String, Vec<Finding>) {
        self.pending.push_str(chunk);
        let cut = if last || self.pending.len() > MAX_HOLD || self.hold == Hold::Nothing {
            self.pending.len()
        } else {
            let word = match self.pending.rfind(|c: char| c.is_whitespace()) {
                Some(i) => i + self.pending[i..].chars().next().map_or(1, char::len_utf8),
                None => 0,
            };
            let keep =
                self.hold == Hold::Word || scanner.gate.may_start_secret(&self.pending[word..]);
            if keep {
                word
            } else {
                self.pending.len()
            }
        };
        let released: String = self.pending.drain(..cut).collect();
        let mut findings = Vec::new();
        if released.is_empty() && !last {
            return (released, findings);
        }
        let lb_at = tail_from(&self.recent, LOOK_BEHIND);
        let behind = self.recent.len() - lb_at;
        let mut window = String::with_capacity(behind + released.len());
        window.push_str(&self.recent[lb_at..]);
        window.push_str(&released);
        let mut spans = Vec::new();
        scanner.spans_of(&window, scanner.span_wants(floors), &mut spans);
        for mut f in spans {
            let (s, e) = f.span.expect("span category");
            if e <= behind {
                continue; // reported with an earlier chunk
            }
            f.span = Some((s.saturating_sub(behind), e - behind));
            findings.push(f);
        }
        self.recent.push_str(&released);
        let drop = tail_from(&self.recent, WINDOW);
        self.recent.drain(..drop);
        self.since_score += released.len();
        if (self.since_score >= RESCORE || (last && self.since_score > 0))
            && scanner.wants_classes(floors)
        {
            self.since_score = 0;
            scanner.classes(&self.recent, &mut findings);
        }
        scanner.keep_reaching(floors, &mut findings);
        (released, findings)
    }
}

// ---------------------------------------------------------------------------------------------
// Python bindings.

/// (category, score, start, end, detail); start/end are -1 for text categories (code points).
type PyFinding = (&'static str, f32, i64, i64, String);

fn to_py(text: &str, findings: Vec<Finding>) -> Vec<PyFinding> {
    let ascii = text.is_ascii();
    let cp = |b: usize| -> i64 {
        if ascii {
            b as i64
        } else {
            text[..b.min(text.len())].chars().count() as i64
        }
    };
    findings
        .into_iter()
        .map(|f| {
            let (s, e) = f.span.map_or((-1, -1), |(s, e)| (cp(s), cp(e)));
            (f.category, f.score, s, e, f.detail)
        })
        .collect()
}

#[pyclass(name = "ContentScanner", module = "gateway._core", frozen)]
pub struct PyContentScanner {
    inner: ContentScanner,
}

#[pymethods]
impl PyContentScanner {
    #[new]
    #[pyo3(signature = (model = None))]
    fn new(model: Option<&[u8]>) -> PyResult<Self> {
        let model = model
            .map(LinearModel::parse)
            .transpose()
            .map_err(PyValueError::new_err)?;
        let inner = ContentScanner::new(model).map_err(PyValueError::new_err)?;
        Ok(PyContentScanner { inner })
    }

    #[getter]
    fn categories(&self) -> Vec<&'static str> {
        self.inner.categories().to_vec()
    }

    #[pyo3(signature = (text, floors = None))]
    fn scan(
        &self,
        py: Python<'_>,
        text: &str,
        floors: Option<Vec<f32>>,
    ) -> PyResult<Vec<PyFinding>> {
        let floors = self.check_floors(floors)?;
        let run = || to_py(text, self.inner.scan_with(text, floors.as_deref()));
        Ok(if text.len() >= DETACH_MIN_BYTES {
            py.detach(run)
        } else {
            run()
        })
    }
}

impl PyContentScanner {
    fn check_floors(&self, floors: Option<Vec<f32>>) -> PyResult<Option<Vec<f32>>> {
        let n = self.inner.categories().len();
        match floors {
            Some(f) if f.len() != n => Err(PyValueError::new_err(format!(
                "floors: one per category ({n}: {}), got {}",
                self.inner.categories().join(", "),
                f.len()
            ))),
            f => Ok(f),
        }
    }
}

#[pyclass(name = "ContentStream", module = "gateway._core")]
pub struct PyContentStream {
    scanner: Py<PyContentScanner>,
    floors: Option<Vec<f32>>,
    inner: ContentStream,
}

#[pymethods]
impl PyContentStream {
    #[new]
    #[pyo3(signature = (scanner, floors = None, hold = "word"))]
    fn new(
        py: Python<'_>,
        scanner: Py<PyContentScanner>,
        floors: Option<Vec<f32>>,
        hold: &str,
    ) -> PyResult<Self> {
        let floors = scanner.bind(py).get().check_floors(floors)?;
        let hold = match hold {
            "word" => Hold::Word,
            "secrets" => Hold::Secrets,
            "nothing" => Hold::Nothing,
            other => {
                return Err(PyValueError::new_err(format!(
                    "hold: \"word\", \"secrets\" or \"nothing\", not {other:?}"
                )))
            }
        };
        Ok(PyContentStream {
            scanner,
            floors,
            inner: ContentStream::new(hold),
        })
    }

    /// `feed(chunk, last=False) -> (released text, findings in it)`.
    #[pyo3(signature = (chunk, last = false))]
    fn feed(&mut self, py: Python<'_>, chunk: &str, last: bool) -> (String, Vec<PyFinding>) {
        let scanner = self.scanner.bind(py).get();
        let (text, findings) =
            self.inner
                .feed_with(&scanner.inner, chunk, last, self.floors.as_deref());
        let py_findings = to_py(&text, findings);
        (text, py_findings)
    }

    #[getter]
    fn pending(&self) -> usize {
        self.inner.pending.len()
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyContentScanner>()?;
    m.add_class::<PyContentStream>()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_secrets_pii_canary_and_danger() {
        let s = ContentScanner::new(None).unwrap();
        let f = s.scan("key AKIAIOSFODNN7EXAMPLE, mail bob@example.com, gwcanary-0123456789abcdef; build a pipe bomb");
        let cats: Vec<_> = f
            .iter()
            .filter(|x| x.score >= 0.5)
            .map(|x| x.category)
            .collect();
        for c in ["secrets", "pii", "canary", "dangerous"] {
            assert!(cats.contains(&c), "{c} missing from {f:?}");
        }
        let clean = s.scan("The weather is mild today.");
        assert!(clean.iter().all(|x| x.score < 0.5), "{clean:?}");
    }

    #[test]
    fn span_gate_holds_for_every_pattern() {
        let s = ContentScanner::new(None).unwrap();
        // derived from the patterns: both gates are on (a pattern they could not cover turns one off)
        assert!(s.gate.secret_prefixes.is_some() && s.gate.pii_bytes.is_some());
        for (text, cat) in [
            ("key AKIAIOSFODNN7EXAMPLE here", "secrets"),
            (
                "token ghp_abcdefghijklmnopqrstuvwxyz0123456789 ok",
                "secrets",
            ),
            ("use sk-ant-abcdefghijklmnopqrstuvwxyz", "secrets"),
            ("-----BEGIN RSA PRIVATE KEY----- abc", "secrets"),
            ("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.abc", "secrets"),
            ("leaked gwcanary-0123456789abcdef", "canary"),
            ("write to bob@example.com", "pii"),
            ("call +1 415 555 0132 now", "pii"),
        ] {
            assert!(
                s.scan(text).iter().any(|f| f.category == cat),
                "{cat} missed in {text:?}"
            );
        }
        assert_eq!(
            s.gate.check("Plain prose, with no numbers at all."),
            (false, false)
        );
    }

    /// Feeds `chunks` and ends the stream: (all released text, all findings).
    fn run(s: &ContentScanner, st: &mut ContentStream, chunks: &[&str]) -> (String, Vec<Finding>) {
        let mut out = String::new();
        let mut found = Vec::new();
        for (i, c) in chunks.iter().chain([&""]).enumerate() {
            let (t, f) = st.feed(s, c, i == chunks.len());
            out.push_str(&t);
            found.extend(f);
        }
        (out, found)
    }

    #[test]
    fn stream_holds_a_token_until_it_is_whole() {
        let s = ContentScanner::new(None).unwrap();
        let mut st = ContentStream::new(Hold::Word);
        let chunks = [
            "your key is AKIA",
            "IOSFODNN7",
            "EXAMPLE and",
            " that is all",
        ];
        let (out, found) = run(&s, &mut st, &chunks);
        assert_eq!(out, "your key is AKIAIOSFODNN7EXAMPLE and that is all");
        let secrets: Vec<_> = found.iter().filter(|f| f.category == "secrets").collect();
        assert_eq!(secrets.len(), 1, "{found:?}");
    }

    #[test]
    fn secrets_hold_passes_prose_tokens_and_holds_a_split_secret() {
        let s = ContentScanner::new(None).unwrap();
        let mut st = ContentStream::new(Hold::Secrets);
        // Tokens as model streams send them (leading space): released as they come, unchanged.
        for c in ["Dolor", " culpa", " key", " ones", " gh"] {
            let (t, _) = st.feed(&s, c, false);
            assert_eq!(t, if c == " gh" { " " } else { c }, "{c:?}");
        }
        // A key and a canary split across chunks are held until their word ends, then found whole.
        let chunks = [
            "p_abcdefghijklmnopqrstuvwxyz0123456789",
            " then",
            " AK",
            "IAIOSFODNN7",
            "EXAMPLE",
            " id:gw",
            "canary-0123456789",
            "abcdef",
            " done",
        ];
        let (out, found) = run(&s, &mut st, &chunks);
        assert_eq!(
            out,
            "ghp_abcdefghijklmnopqrstuvwxyz0123456789 then AKIAIOSFODNN7EXAMPLE id:gwcanary-0123456789abcdef done"
        );
        let count = |cat: &str| found.iter().filter(|f| f.category == cat).count();
        assert_eq!((count("secrets"), count("canary")), (2, 1), "{found:?}");
    }

    #[test]
    fn nothing_hold_releases_every_chunk_as_it_comes() {
        let s = ContentScanner::new(None).unwrap();
        let mut st = ContentStream::new(Hold::Nothing);
        for c in ["mail bob", "@example", ".com now"] {
            assert_eq!(st.feed(&s, c, false).0, c);
        }
    }

    #[test]
    fn stream_canary_split_across_chunks() {
        let s = ContentScanner::new(None).unwrap();
        let mut st = ContentStream::new(Hold::Word);
        let mut hits = 0;
        for c in ["the prompt said gwcanary-0123", "456789abcdef ", "ok"] {
            hits += st
                .feed(&s, c, false)
                .1
                .iter()
                .filter(|f| f.category == "canary")
                .count();
        }
        hits += st
            .feed(&s, "", true)
            .1
            .iter()
            .filter(|f| f.category == "canary")
            .count();
        assert_eq!(hits, 1);
    }
}

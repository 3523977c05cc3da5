//! Text features of the request-category classifier (`gateway.quality.classifier`): what a prompt
//! is about, read cheaply enough to run on every category-less request.
//!
//! They are deliberately not the compliance scanners' features (`textnorm::for_each_feature`:
//! byte 3/4/5-grams over the fully normalised text, built to see through obfuscation). A task
//! category is a matter of vocabulary, so a prompt is read as lower-cased words (maximal runs of
//! alphanumeric characters), word bigrams and byte 4-grams (sub-word pieces), from its first
//! `HEAD_CHARS` and last `TAIL_CHARS` characters only: the instruction is usually at the start or
//! the end, and the middle of a long prompt (a pasted document) says little about the task. The
//! cost is bounded by those lengths, whatever the prompt's size (~1,000 feature occurrences).
//!
//! Held out on RouteLLM's MMLU subjects + GSM8K (58 categories, trained on half A, scored on half
//! B's 7,694 items), these features classify as well as the compliance scanners' did (66.1% vs
//! 66.4% top-1) at a fraction of their count.
//!
//! Changing anything here changes what a trained classifier means: bump `FEATURES_VERSION` (the
//! classifier file carries a fingerprint of this function's output and is refused at load when it
//! no longer matches).

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

/// Characters read from the start of a prompt.
pub const HEAD_CHARS: usize = 512;
/// Characters read from the end of a prompt (when it is longer than `HEAD_CHARS + TAIL_CHARS`).
pub const TAIL_CHARS: usize = 256;
/// Version of the feature definition (part of the classifier file's fingerprint).
pub const FEATURES_VERSION: u32 = 1;

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0100_0000_01b3;
const WORD_TAG: u64 = 1 << 61;
const BIGRAM_TAG: u64 = 2 << 61;
const GRAM_TAG: u64 = 3 << 61;

/// The byte ranges of `text` that are read: the whole text, or its first `head` and last `tail`
/// characters (on character boundaries).
fn spans(text: &str, head: usize, tail: usize) -> [(usize, usize); 2] {
    let len = text.len();
    // A text of at most head + tail bytes has at most that many characters.
    if len <= head + tail {
        return [(0, len), (len, len)];
    }
    let head_end = text.char_indices().nth(head).map_or(len, |(i, _)| i);
    let tail_start = if tail == 0 {
        len
    } else {
        text.char_indices().nth_back(tail - 1).map_or(0, |(i, _)| i)
    };
    if tail_start <= head_end {
        [(0, len), (len, len)]
    } else {
        [(0, head_end), (tail_start, len)]
    }
}

/// The last four bytes of a text, as its byte 4-grams go by.
struct Grams {
    v: u32,
    len: usize,
}

impl Grams {
    /// Adds a byte; the 4-gram it completes, if there are four yet.
    fn push(&mut self, b: u8) -> Option<u64> {
        self.v = (self.v << 8) | b as u32;
        self.len += 1;
        (self.len >= 4).then_some(self.v as u64 | GRAM_TAG)
    }
}

/// Calls `f` with the hashed index (`< 2^bits`) of every feature occurrence of `text` (raw, not
/// normalised), from its first `head` and last `tail` characters: each lower-cased word, each pair
/// of adjacent words, and each byte 4-gram of the lower-cased text with whitespace runs as one
/// space (sub-word pieces: "astronom" is shared by astronomy and astronomer). Pairs and 4-grams do
/// not span the cut. Returns the number of occurrences.
pub fn for_each_category_feature(
    text: &str,
    bits: u32,
    head: usize,
    tail: usize,
    mut f: impl FnMut(u32),
) -> usize {
    let mask = (1u64 << bits) - 1;
    let mix = |h: u64| ((h.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 17) & mask) as u32;
    let mut n = 0;
    let mut emit = |h: Option<u64>| {
        if let Some(h) = h {
            f(mix(h));
            n += 1;
        }
    };
    let mut buf = [0u8; 4];
    for (start, end) in spans(text, head, tail) {
        let mut grams = Grams { v: 0, len: 0 };
        let mut prev: Option<u64> = None; // the previous word's hash
        let mut word = FNV_OFFSET;
        let mut in_word = false;
        let mut after_space = true;
        // one character past the end flushes the last word
        for c in text[start..end].chars().chain(std::iter::once(' ')) {
            if c.is_alphanumeric() {
                in_word = true;
                after_space = false;
                if c.is_ascii() {
                    let b = c.to_ascii_lowercase() as u8;
                    word = (word ^ b as u64).wrapping_mul(FNV_PRIME);
                    emit(grams.push(b));
                } else {
                    for l in c.to_lowercase() {
                        for &b in l.encode_utf8(&mut buf).as_bytes() {
                            word = (word ^ b as u64).wrapping_mul(FNV_PRIME);
                            emit(grams.push(b));
                        }
                    }
                }
                continue;
            }
            if in_word {
                emit(Some(word ^ WORD_TAG));
                if let Some(p) = prev {
                    emit(Some(p.rotate_left(17) ^ word ^ BIGRAM_TAG));
                }
                prev = Some(word);
                word = FNV_OFFSET;
                in_word = false;
            }
            if c.is_whitespace() {
                if !after_space {
                    emit(grams.push(b' '));
                    after_space = true;
                }
            } else {
                after_space = false;
                for &b in c.encode_utf8(&mut buf).as_bytes() {
                    emit(grams.push(b));
                }
            }
        }
    }
    n
}

/// `category_features(text, bits=15, head=512, tail=256)`: the hashed feature occurrences of a
/// prompt for the request-category classifier (see the module's documentation).
#[pyfunction(name = "category_features")]
#[pyo3(signature = (text, bits = 15, head = HEAD_CHARS, tail = TAIL_CHARS))]
fn py_category_features(text: &str, bits: u32, head: usize, tail: usize) -> PyResult<Vec<u32>> {
    if !(8..=24).contains(&bits) {
        return Err(PyValueError::new_err("bits must be in 8..=24"));
    }
    let mut out = Vec::with_capacity(64);
    for_each_category_feature(text, bits, head, tail, |h| out.push(h));
    Ok(out)
}

/// `CategoryModel(weights, bias, bits=15, head=512, tail=256)`: a trained softmax classifier over
/// these features, scored in one pass (no feature list crosses into Python). `weights` are the
/// little-endian f32 matrix `(2^bits, len(bias))`, row-major: the row of a feature holds its weight
/// for every category. `probs(text)`: softmax of `bias + Σ rows / sqrt(occurrences)`.
///
/// The weights are kept as int8 with a scale per category, each feature's row padded to a whole
/// number of 64-byte cache lines (one line for up to 64 categories): a prompt's ~1,000 features
/// touch that many lines of a 2 MB table instead of four times as many of an 8 MB one, which is
/// what scoring costs when the table is not in cache (between requests it mostly is not).
#[pyclass(name = "CategoryModel", frozen)]
pub struct PyCategoryModel {
    weights: Vec<i8>,
    base: usize, // where row 0 starts in `weights` (64-byte aligned)
    stride: usize,
    scale: Vec<f32>,
    bias: Vec<f32>,
    bits: u32,
    head: usize,
    tail: usize,
}

#[pymethods]
impl PyCategoryModel {
    #[new]
    #[pyo3(signature = (weights, bias, bits = 15, head = HEAD_CHARS, tail = TAIL_CHARS))]
    fn new(weights: &[u8], bias: Vec<f32>, bits: u32, head: usize, tail: usize) -> PyResult<Self> {
        if !(8..=24).contains(&bits) {
            return Err(PyValueError::new_err("bits must be in 8..=24"));
        }
        let k = bias.len();
        let rows = 1usize << bits;
        if k == 0 || weights.len() != rows * k * 4 {
            return Err(PyValueError::new_err(format!(
                "weights must hold 2**bits x {k} little-endian f32 values"
            )));
        }
        let w: Vec<f32> = weights
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        // per category: the largest weight maps to 127
        let mut scale = vec![0f32; k];
        for row in w.chunks_exact(k) {
            for (s, x) in scale.iter_mut().zip(row) {
                *s = s.max(x.abs());
            }
        }
        scale
            .iter_mut()
            .for_each(|s| *s = if *s > 0.0 { *s / 127.0 } else { 1.0 });
        let stride = k.div_ceil(64) * 64;
        let mut q = vec![0i8; rows * stride + 63];
        let base = (64 - q.as_ptr() as usize % 64) % 64;
        for (row, out) in w.chunks_exact(k).zip(q[base..].chunks_exact_mut(stride)) {
            for ((o, x), s) in out.iter_mut().zip(row).zip(&scale) {
                *o = (x / s).round().clamp(-127.0, 127.0) as i8;
            }
        }
        Ok(Self {
            weights: q,
            base,
            stride,
            scale,
            bias,
            bits,
            head,
            tail,
        })
    }

    /// The probability of every category, in `bias` order.
    fn probs(&self, text: &str) -> Vec<f32> {
        let k = self.bias.len();
        let mut acc = vec![0i32; k];
        let n = for_each_category_feature(text, self.bits, self.head, self.tail, |h| {
            let at = self.base + h as usize * self.stride;
            for (a, &w) in acc.iter_mut().zip(&self.weights[at..at + k]) {
                *a += w as i32;
            }
        });
        let norm = if n > 0 { 1.0 / (n as f32).sqrt() } else { 0.0 };
        let mut z: Vec<f32> = acc
            .iter()
            .zip(&self.scale)
            .zip(&self.bias)
            .map(|((&a, s), b)| a as f32 * s * norm + b)
            .collect();
        let top = z.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut sum = 0.0;
        for a in z.iter_mut() {
            *a = (*a - top).exp();
            sum += *a;
        }
        z.iter_mut().for_each(|a| *a /= sum);
        z
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(py_category_features, m)?)?;
    m.add_class::<PyCategoryModel>()?;
    m.add("CATEGORY_FEATURES_VERSION", FEATURES_VERSION)?;
    m.add("CATEGORY_HEAD_CHARS", HEAD_CHARS)?;
    m.add("CATEGORY_TAIL_CHARS", TAIL_CHARS)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feats(t: &str) -> Vec<u32> {
        let mut v = Vec::new();
        for_each_category_feature(t, 15, HEAD_CHARS, TAIL_CHARS, |h| v.push(h));
        v
    }

    #[test]
    fn words_pairs_and_grams_case_folded() {
        assert_eq!(feats("Solve  THIS"), feats("solve this"));
        // two words, one pair, the 4-grams of "solve this " (the end counts as a space)
        assert_eq!(feats("solve this").len(), 2 + 1 + 8);
        assert_ne!(feats("solve this"), feats("this solve"));
        assert_eq!(feats("Écrire ÉTÉ"), feats("écrire été"));
        assert!(feats("  ,;  ").is_empty());
    }

    #[test]
    fn long_texts_are_read_at_both_ends_only() {
        let a = format!("translate this {} into french", "filler ".repeat(2000));
        let b = format!("translate this {} into french", "other ".repeat(3000));
        let (fa, fb) = (feats(&a), feats(&b));
        assert!(fa.len() < 2 * (HEAD_CHARS + TAIL_CHARS));
        // the same start and end, another middle: the same features at the ends
        assert_eq!(fa[..10], fb[..10]);
        assert_eq!(fa[fa.len() - 4..], fb[fb.len() - 4..]);
    }

    #[test]
    fn cuts_fall_on_character_boundaries() {
        let (t, h, e) = (
            "é".repeat(1000),
            "é".repeat(HEAD_CHARS),
            "é".repeat(TAIL_CHARS),
        );
        assert_eq!(feats(&t), [feats(&h), feats(&e)].concat());
        assert_eq!(spans("abc", 1, 1), [(0, 1), (2, 3)]);
        assert_eq!(spans("abc", 2, 1), [(0, 3), (3, 3)]);
        assert_eq!(spans("aéb", 1, 1), [(0, 1), (3, 4)]);
    }

    #[test]
    fn model_scores_like_the_float_weights() {
        let bits = 8;
        // every feature votes for category 1 (weight 0.5) and against category 0 (-0.25)
        let w: Vec<u8> = (0..1 << bits)
            .flat_map(|_| [-0.25f32, 0.5].into_iter().flat_map(f32::to_le_bytes))
            .collect();
        let m = PyCategoryModel::new(&w, vec![0.0, 0.0], bits, 512, 256).unwrap();
        let n = feats("an astronomy question").len() as f32; // (the same occurrences at 8 bits)
        let p = m.probs("an astronomy question");
        let z = 0.75 * n / n.sqrt(); // logit difference
        assert!((p[1] - 1.0 / (1.0 + (-z).exp())).abs() < 1e-3, "{p:?}");
        assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-5);
        assert_eq!(m.probs(""), vec![0.5, 0.5]); // no features: the biases alone
        assert!(PyCategoryModel::new(&w[4..], vec![0.0, 0.0], bits, 512, 256).is_err());
    }
}

"""Typed stubs for the Rust core (`rust/src/`): PII, tokens, rate limiting, JSON schema, injection and content.

Texts of 4 KiB or more are processed with the GIL released.
"""

from collections.abc import Mapping, Sequence
from typing import Any, Literal, final

__version__: str

# --- PII (rust/src/pii.rs) ---------------------------------------------------------------------

@final
class PiiScanner:
    """Regex + validation scanner for structured PII and secrets, compiled once per instance.

    Types: EMAIL_ADDRESS, PHONE_NUMBER, CREDIT_CARD (Luhn), IBAN_CODE (mod-97, per-country
    length), US_SSN, IP_ADDRESS (v4/v6), UK_NINO, AWS_ACCESS_KEY, GITHUB_TOKEN, GITLAB_TOKEN,
    SLACK_TOKEN, OPENAI_KEY, ANTHROPIC_KEY, JWT, PRIVATE_KEY. Ambiguous matches (bare digit runs,
    phone numbers outside known numbering plans, Luhn-valid numbers without a card issuer
    prefix) are reported only with a context word nearby ("phone", "ssn", "card", ...), which
    also raises the score by 0.3.
    """

    def __init__(self, entities: Sequence[str] | None = None) -> None:
        """`entities=None` scans for all types; unknown names raise ValueError."""
    @staticmethod
    def entity_types() -> list[str]:
        """All supported type names."""
    @property
    def entities(self) -> list[str]:
        """The types this scanner looks for."""
    def scan(self, text: str) -> list[tuple[str, int, int, float]]:
        """(type, start, end, score) with str (code point) offsets; non-overlapping (higher
        score, then longer, wins), sorted by start."""
    def mask(
        self,
        texts: Sequence[str],
        known: Mapping[str, str],
        mask_types: set[str] | None = None,
    ) -> tuple[list[str], dict[str, str], dict[str, int]]:
        """Replace values of `mask_types` (None = all) by `<TYPE_N>` placeholders.

        `known` maps value -> placeholder from earlier texts and is reused; new numbers continue
        per type after the highest one in `known`. Returns (masked texts, value -> placeholder
        for old and new values, detections per type over all texts incl. unmasked types).
        """

def unmask(text: str, mapping: Mapping[str, str]) -> str:
    """Replace known `<TYPE_N>` placeholders by their values; other text is left alone.

    `mapping` may be value -> placeholder (as returned by `mask`) or placeholder -> value: the
    side whose every entry looks like `<TYPE_N>` is taken as the placeholders.
    """

@final
class StreamUnmasker:
    """Unmask a stream chunk by chunk; holds back only an unfinished `<TYPE_` that is a prefix
    of a known placeholder. `"".join(feed(c) for c in chunks) + flush() == unmask(whole)`."""

    def __init__(self, mapping: Mapping[str, str]) -> None:
        """`mapping` in either direction, as for `unmask`."""
    def feed(self, chunk: str) -> str: ...
    def flush(self) -> str:
        """Return whatever is held back (call at end of stream)."""
    @property
    def pending(self) -> int:
        """Bytes currently held back."""

# --- Tokens (rust/src/tokens.rs) ---------------------------------------------------------------

@final
class Tokenizer:
    """OpenAI BPE (`o200k_base` or `cl100k_base`); ranks are compiled in, built once per process.

    Special-token strings in text (e.g. "<|endoftext|>") are counted as ordinary text.
    """

    def __init__(self, encoding: str = "o200k_base") -> None: ...
    @property
    def encoding(self) -> str: ...
    def count(self, text: str) -> int: ...
    def count_batch(self, texts: Sequence[str]) -> list[int]: ...
    def encode(self, text: str) -> list[int]: ...
    def decode(self, tokens: Sequence[int]) -> str: ...
    def count_messages(
        self,
        messages: Sequence[Mapping[str, Any]],
        tools: Sequence[Mapping[str, Any]] | None = None,
    ) -> int:
        """Prompt tokens of a chat request, OpenAI cookbook accounting.

        Per message 3 + tokens of role, content, name (+1 if name), refusal, and of each tool
        call's function name and arguments; +3 for the reply priming. Content may be a str or a
        list of parts: text parts are counted; images cost 85 tokens at detail "low", else 765
        (a 1024x1024 image at high detail: the size is unknown without fetching it); other parts
        (audio, files) count 0. tool_call_id is not counted.

        Tools (OpenAI `{"type": "function", "function": {...}}` or flat, `parameters` or
        `input_schema`): the cookbook's `num_tokens_for_tools` approximation: per function
        7 (cl100k: 10) + tokens("name:description"), 3 if it has properties, per top-level
        property 3 + tokens("name:type:description") + per enum value 3 + tokens(value) - 3 per
        enum, plus 12 once. Nested properties are not walked.
        """

def estimate_tokens(text: str) -> int:
    """For providers without a public tokenizer: ceil(o200k count x 1.1), a deliberate ~10%
    over-estimate for reservations. chars/4 was rejected: on the 1,250 arena-hard prompts its
    ratio to the o200k count is 0.61-1.33 (p10-p90, min 0.23 for CJK), i.e. far less stable."""

def encoding_for_model(model: str) -> str:
    """gpt-4o*, gpt-4.1*, gpt-4.5*, gpt-5*, o1*/o3*/o4*, gpt-oss* -> o200k_base;
    gpt-4*, gpt-3.5*, text-embedding-3*/ada-002 -> cl100k_base; anything else -> o200k_base.
    A provider prefix ("openai/gpt-4o") is ignored."""

# --- Rate limiting (rust/src/ratelimit.rs) -----------------------------------------------------

@final
class RateLimiter:
    """GCRA token buckets keyed by string; concurrency-safe without a global lock.

    A bucket holds at most `capacity` tokens, refills continuously at capacity/window per second
    and starts full, so over any interval of length L at most capacity + capacity*L/window is
    admitted. `now` is seconds on the `time.monotonic()` clock (the default); pass it explicitly
    to use another clock, consistently. Buckets that are full again, or untouched for
    `idle_ttl_s`, are dropped by `sweep()` (also run automatically every min(idle_ttl_s/2, 60 s));
    use an idle_ttl_s at least as long as your longest window to never forget a partial bucket.
    """

    def __init__(self, idle_ttl_s: float = 600.0) -> None: ...
    def acquire(
        self,
        limits: Sequence[tuple[str, float, float, float]],
        now: float | None = None,
    ) -> tuple[bool, int, float, list[float], list[float]]:
        """limits: (key, capacity_per_window, window_seconds, cost). All or nothing.

        Returns (allowed, index of the first refusing limit or -1, retry_after_s, remaining per
        limit, reset_s per limit (time until full)). retry_after_s is 0 when allowed, the time
        until the refusing bucket holds `cost` otherwise, and -1.0 when cost > capacity (never).
        When refused nothing is charged and remaining/reset describe the uncharged buckets.
        """
    def adjust(
        self, key: str, capacity: float, window_s: float, delta: float, now: float | None = None
    ) -> None:
        """delta > 0 gives tokens back (clamped at full); delta < 0 charges without a check
        (the bucket may go into debt, remaining < 0)."""
    def peek(self, key: str, capacity: float, window_s: float, now: float | None = None) -> float:
        """Tokens available now (capacity for an unknown key); negative while in debt."""
    def sweep(self, now: float | None = None) -> int:
        """Drop full and idle buckets; returns how many were dropped."""
    def __len__(self) -> int: ...

# --- JSON schema (rust/src/schema.rs) ----------------------------------------------------------

@final
class JsonSchema:
    """A compiled JSON Schema (draft from `$schema`, else `draft`, else 2020-12; 4, 6, 7,
    2019-09 and 2020-12 supported). Never does I/O: remote `$ref`s resolve only against
    `resources` (uri -> schema JSON text). Invalid schemas raise ValueError."""

    def __init__(
        self,
        schema: str | bytes,
        draft: str | None = None,
        resources: Mapping[str, str] | None = None,
    ) -> None: ...
    def is_valid(self, instance: str | bytes) -> bool:
        """`instance` is JSON text; invalid JSON is simply not valid."""
    def errors(self, instance: str | bytes, limit: int = 10) -> list[str]:
        """Up to `limit` "<instance JSON pointer>: <message>" strings (root is "/"); [] if
        valid; one error if `instance` is not JSON."""

def compile_schema(schema: str | bytes) -> JsonSchema:
    """`JsonSchema(schema)` from a process-wide LRU cache (1024 schemas) keyed by the text."""

# --- Injection (rust/src/injection.rs, rust/src/textnorm.rs) -----------------------------------

@final
class InjectionScanner:
    """Prompt-injection scanner: normalisation (NFKC, confusables, zero-width/bidi stripped, leetspeak,
    letter-spacing, base64/hex decoded, ROT13), signatures (Aho-Corasick + RegexSet, each with an id and a
    weight) and a hashed n-gram linear model. Score = 1 - (1 - p_classifier) * Π(1 - w_rule)."""

    def __init__(self, model: bytes | None = None) -> None:
        """`model`: a GWLM v3 file (uncompressed) with classes "direct" and/or "indirect"; None = signatures
        only. Raises ValueError on a malformed file."""
    def scan(self, text: str, indirect: bool = False) -> tuple[float, list[str], float, float]:
        """(score, rule ids, classifier probability, signature score). `indirect=True` scores every ~400-byte
        window of the text with the indirect model and keeps the maximum."""
    @staticmethod
    def rules() -> list[tuple[str, float, str]]:
        """(id, weight, kind) of every signature."""
    @property
    def has_model(self) -> bool: ...

def normalize(text: str, decode: bool = True) -> str:
    """The normalised text the scanners see; with `decode`, decoded base64/hex segments are appended."""

def hash_features(norm: str, bits: int) -> list[int]:
    """Hashed feature occurrences (byte 3-, 4- and 5-grams, word unigrams and bigrams) of a normalised text, each < 2**bits."""

def text_windows(norm: str, size: int = 400) -> list[str]:
    """The overlapping sentence windows indirect scoring looks at."""

# --- Request categories (rust/src/category.rs) -------------------------------------------------

CATEGORY_FEATURES_VERSION: int
CATEGORY_HEAD_CHARS: int
CATEGORY_TAIL_CHARS: int

def category_features(text: str, bits: int = 15, head: int = 512, tail: int = 256) -> list[int]:
    """Hashed feature occurrences (lower-cased words, adjacent word pairs, byte 4-grams) of a raw prompt's first
    `head` and last `tail` characters, each < 2**bits: the request-category classifier's features."""

@final
class CategoryModel:
    """A softmax classifier over `category_features`, scored in one pass."""

    def __init__(
        self, weights: bytes, bias: Sequence[float], bits: int = 15, head: int = 512, tail: int = 256
    ) -> None: ...
    def probs(self, text: str) -> list[float]:
        """The probability of every category, in `bias` order."""

# --- Output content (rust/src/content.rs) ------------------------------------------------------

@final
class ContentScanner:
    """Output categories: the model's text classes (sexual, sexual/minors, hate, harassment, violence,
    self-harm, dangerous), dangerous-instruction phrases, secrets, PII and `gwcanary-` tokens."""

    def __init__(self, model: bytes | None = None) -> None: ...
    @property
    def categories(self) -> list[str]: ...
    def scan(
        self, text: str, floors: Sequence[float] | None = None
    ) -> list[tuple[str, float, int, int, str]]:
        """(category, score, start, end, detail); start/end are code-point offsets for span categories
        (secrets, pii, canary) and -1 for text categories. `floors`: one score per `categories` entry
        (inf: not wanted); only findings reaching their floor are returned, and parts of the scan no floor
        needs are skipped. ValueError when its length differs from `categories`."""

@final
class ContentStream:
    """Incremental scan of one stream: text is released as `hold` allows (a span that is cut out is never
    released half-scanned), spans are matched with a 96-byte look-behind, the classifier rescores the last 1 KiB
    every 256 new bytes and at the end."""

    def __init__(
        self,
        scanner: ContentScanner,
        floors: Sequence[float] | None = None,
        hold: Literal["word", "secrets", "nothing"] = "word",
    ) -> None:
        """`floors` as for `ContentScanner.scan`. `hold`: what is kept back until the next chunk — the
        unfinished last word (`word`), only a last word that may begin a secret or canary literal
        (`secrets`), or nothing. ValueError for another value."""
    def feed(self, chunk: str, last: bool = False) -> tuple[str, list[tuple[str, float, int, int, str]]]:
        """(text released now, findings in it with offsets into that text)."""
    @property
    def pending(self) -> int:
        """Bytes held back."""

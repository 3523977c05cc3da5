//! JSON-Schema validation of JSON text (draft 4/6/7, 2019-09, 2020-12 via the `jsonschema` crate).
//!
//! No I/O ever: remote `$ref`s resolve only against resources handed in explicitly.
//! `compile_schema` keeps compiled validators in a bounded LRU keyed by a hash of the schema
//! text, so the request path never recompiles a schema it has seen.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::num::NonZeroUsize;
use std::sync::{Arc, LazyLock};

use jsonschema::{Draft, Retrieve, Uri, Validator};
use lru::LruCache;
use parking_lot::Mutex;
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes, PyString};
use serde_json::Value;

use crate::pii::DETACH_MIN_BYTES;

const CACHE_SIZE: usize = 1024;

/// Serves `$ref` targets from an in-memory map; anything else is an error, never a fetch.
struct LocalResources(HashMap<String, Value>);

impl Retrieve for LocalResources {
    fn retrieve(
        &self,
        uri: &Uri<String>,
    ) -> Result<Value, Box<dyn std::error::Error + Send + Sync>> {
        let key = uri.as_str();
        self.0
            .get(key)
            .or_else(|| self.0.get(key.trim_end_matches('#')))
            .cloned()
            .ok_or_else(|| format!("remote $ref {key} is not available (no network access; pass it in `resources`)").into())
    }
}

pub fn parse_draft(name: &str) -> Option<Draft> {
    let n = name
        .trim_start_matches("draft")
        .trim_start_matches('-')
        .trim_start_matches('0');
    Some(match n {
        "4" => Draft::Draft4,
        "6" => Draft::Draft6,
        "7" => Draft::Draft7,
        "2019-09" => Draft::Draft201909,
        "2020-12" => Draft::Draft202012,
        _ => return None,
    })
}

/// Compile a schema; the draft comes from `$schema`, else `draft`, else 2020-12.
pub fn compile(
    schema: &[u8],
    draft: Option<Draft>,
    resources: HashMap<String, Value>,
) -> Result<Validator, String> {
    let value: Value =
        serde_json::from_slice(schema).map_err(|e| format!("schema is not valid JSON: {e}"))?;
    let mut opts = jsonschema::options().with_retriever(LocalResources(resources));
    // `draft` is the default dialect: an explicit `$schema` (possibly a custom meta-schema) wins.
    let declared = value.get("$schema").is_some_and(Value::is_string);
    if let Some(d) = draft.filter(|_| !declared) {
        opts = opts.with_draft(d);
    }
    opts.build(&value)
        .map_err(|e| format!("invalid JSON schema: {e}"))
}

pub fn is_valid(v: &Validator, instance: &[u8]) -> bool {
    serde_json::from_slice::<Value>(instance).is_ok_and(|i| v.is_valid(&i))
}

/// "<instance path>: <message>" for up to `limit` errors; the root path is shown as "/".
pub fn errors(v: &Validator, instance: &[u8], limit: usize) -> Vec<String> {
    let instance: Value = match serde_json::from_slice(instance) {
        Ok(i) => i,
        Err(e) => return vec![format!("/: instance is not valid JSON: {e}")],
    };
    v.iter_errors(&instance)
        .take(limit)
        .map(|e| {
            let path = e.instance_path().as_str();
            format!("{}: {e}", if path.is_empty() { "/" } else { path })
        })
        .collect()
}

type Compiled = Result<Arc<Validator>, String>;

/// schema hash -> (schema text, compiled validator or error); the text guards against collisions.
type Cache = LruCache<u64, (Box<[u8]>, Compiled)>;
static CACHE: LazyLock<Mutex<Cache>> =
    LazyLock::new(|| Mutex::new(LruCache::new(NonZeroUsize::new(CACHE_SIZE).unwrap())));

pub fn compile_cached(schema: &[u8]) -> Compiled {
    let mut h = DefaultHasher::new();
    schema.hash(&mut h);
    let key = h.finish();
    if let Some((text, compiled)) = CACHE.lock().get(&key) {
        if **text == *schema {
            return compiled.clone();
        }
    }
    // Compile outside the lock; a concurrent miss on the same schema just compiles twice.
    let compiled = compile(schema, None, HashMap::new()).map(Arc::new);
    CACHE.lock().put(key, (schema.into(), compiled.clone()));
    compiled
}

/// Borrow the bytes of a `str`, `bytes` or `bytearray`-free argument (`bytearray` is copied).
fn json_bytes<'a>(obj: &'a Bound<'_, PyAny>) -> PyResult<std::borrow::Cow<'a, [u8]>> {
    if let Ok(s) = obj.cast::<PyString>() {
        Ok(std::borrow::Cow::Borrowed(s.to_str()?.as_bytes()))
    } else if let Ok(b) = obj.cast::<PyBytes>() {
        Ok(std::borrow::Cow::Borrowed(b.as_bytes()))
    } else if let Ok(b) = obj.cast::<PyByteArray>() {
        Ok(std::borrow::Cow::Owned(b.to_vec()))
    } else {
        Err(PyTypeError::new_err("expected JSON text as str or bytes"))
    }
}

#[pyclass(name = "JsonSchema", module = "gateway._core", frozen)]
pub struct PyJsonSchema {
    validator: Arc<Validator>,
}

#[pymethods]
impl PyJsonSchema {
    #[new]
    #[pyo3(signature = (schema, draft = None, resources = None))]
    fn new(
        py: Python<'_>,
        schema: &Bound<'_, PyAny>,
        draft: Option<&str>,
        resources: Option<HashMap<String, String>>,
    ) -> PyResult<Self> {
        let draft = draft
            .map(|d| {
                parse_draft(d).ok_or_else(|| {
                    PyValueError::new_err(format!(
                        "unknown draft {d:?}; use 4, 6, 7, 2019-09 or 2020-12"
                    ))
                })
            })
            .transpose()?;
        let mut res = HashMap::new();
        for (uri, text) in resources.unwrap_or_default() {
            let v = serde_json::from_str(&text).map_err(|e| {
                PyValueError::new_err(format!("resource {uri} is not valid JSON: {e}"))
            })?;
            res.insert(uri, v);
        }
        let bytes = json_bytes(schema)?;
        let validator = py
            .detach(|| compile(&bytes, draft, res))
            .map_err(PyValueError::new_err)?;
        Ok(PyJsonSchema {
            validator: Arc::new(validator),
        })
    }

    fn is_valid(&self, py: Python<'_>, instance: &Bound<'_, PyAny>) -> PyResult<bool> {
        let bytes = json_bytes(instance)?;
        Ok(if bytes.len() >= DETACH_MIN_BYTES {
            py.detach(|| is_valid(&self.validator, &bytes))
        } else {
            is_valid(&self.validator, &bytes)
        })
    }

    #[pyo3(signature = (instance, limit = 10))]
    fn errors(
        &self,
        py: Python<'_>,
        instance: &Bound<'_, PyAny>,
        limit: usize,
    ) -> PyResult<Vec<String>> {
        let bytes = json_bytes(instance)?;
        Ok(if bytes.len() >= DETACH_MIN_BYTES {
            py.detach(|| errors(&self.validator, &bytes, limit))
        } else {
            errors(&self.validator, &bytes, limit)
        })
    }
}

/// `compile_schema(schema)`: like `JsonSchema(schema)`, from a process-wide LRU cache.
#[pyfunction]
fn compile_schema(py: Python<'_>, schema: &Bound<'_, PyAny>) -> PyResult<PyJsonSchema> {
    let bytes = json_bytes(schema)?;
    let validator = py
        .detach(|| compile_cached(&bytes))
        .map_err(PyValueError::new_err)?;
    Ok(PyJsonSchema { validator })
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyJsonSchema>()?;
    m.add_function(wrap_pyfunction!(compile_schema, m)?)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const PERSON: &str = r#"{"type":"object","required":["name"],"properties":{"name":{"type":"string"},"age":{"type":"integer","minimum":0}}}"#;

    #[test]
    fn validates_and_reports_paths() {
        let v = compile(PERSON.as_bytes(), None, HashMap::new()).unwrap();
        assert!(is_valid(&v, br#"{"name":"a","age":3}"#));
        assert!(!is_valid(&v, br#"{"age":-1}"#));
        assert!(!is_valid(&v, b"{not json"));
        let errs = errors(&v, br#"{"name":1,"age":-1}"#, 10);
        assert_eq!(errs.len(), 2, "{errs:?}");
        assert!(errs.iter().any(|e| e.starts_with("/name: ")), "{errs:?}");
        assert!(errs.iter().any(|e| e.starts_with("/age: ")), "{errs:?}");
        assert_eq!(errors(&v, br#"{"name":1,"age":-1}"#, 1).len(), 1);
        assert!(errors(&v, b"[", 10)[0].contains("not valid JSON"));
    }

    #[test]
    fn draft_detection_and_override() {
        // `items` as an array is a tuple in draft 7, invalid structure in 2020-12 for this check.
        let s = br#"{"$schema":"http://json-schema.org/draft-07/schema#","items":[{"type":"integer"}],"additionalItems":false}"#;
        let v = compile(s, None, HashMap::new()).unwrap();
        assert!(is_valid(&v, b"[1]"));
        assert!(!is_valid(&v, b"[1, 2]"));
        assert_eq!(parse_draft("draft2019-09"), Some(Draft::Draft201909));
        assert_eq!(parse_draft("draft-07"), Some(Draft::Draft7));
        assert_eq!(parse_draft("7"), Some(Draft::Draft7));
        assert_eq!(parse_draft("8"), None);
    }

    #[test]
    fn rejects_invalid_schemas_and_remote_refs() {
        assert!(compile(br#"{"type": 12}"#, None, HashMap::new())
            .unwrap_err()
            .contains("invalid JSON schema"));
        assert!(compile(b"{", None, HashMap::new())
            .unwrap_err()
            .contains("not valid JSON"));
        let remote = br#"{"$ref":"http://example.com/s.json"}"#;
        assert!(compile(remote, None, HashMap::new()).is_err());
        let res = HashMap::from([(
            "http://example.com/s.json".to_string(),
            serde_json::json!({"type": "string"}),
        )]);
        let v = compile(remote, None, res).unwrap();
        assert!(is_valid(&v, br#""x""#));
        assert!(!is_valid(&v, b"1"));
    }

    #[test]
    fn cache_returns_same_validator() {
        let a = compile_cached(PERSON.as_bytes()).unwrap();
        let b = compile_cached(PERSON.as_bytes()).unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        assert!(compile_cached(b"{").is_err());
    }
}

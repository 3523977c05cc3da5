//! In-process rate limiting with GCRA (the "virtual scheduling" form of a token bucket).
//!
//! A bucket holds at most `capacity` tokens and refills continuously at `capacity / window`
//! tokens per second; a new (or forgotten) bucket starts full. So within any interval of length
//! `L` at most `capacity + capacity * L / window` tokens are admitted (`2 * capacity` within one
//! window at worst: a full burst, then the refill).
//!
//! Each bucket's whole state is one number, its theoretical arrival time `tat`: the bucket is full
//! when `tat <= now` and holds `capacity - (tat - now) / interval` tokens otherwise, where
//! `interval = window / capacity` is the refill time of one token. Forgetting a full bucket is
//! lossless, which is what `sweep` relies on.
//!
//! Buckets live in a sharded `DashMap` behind per-bucket mutexes: different keys never contend on
//! one lock, and a multi-limit `acquire` locks its buckets in key order (no deadlock).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use dashmap::DashMap;
use parking_lot::Mutex;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;

/// Relative tolerance for float rounding when a charge lands exactly on the capacity.
const EPS: f64 = 1e-9;

#[derive(Debug)]
struct Bucket {
    tat: f64,
    last_seen: f64,
}

/// One limit of an `acquire` call.
#[derive(Clone, Copy, Debug)]
pub struct Limit<'a> {
    pub key: &'a str,
    pub capacity: f64,
    pub window: f64,
    pub cost: f64,
}

impl Limit<'_> {
    fn interval(&self) -> f64 {
        self.window / self.capacity
    }

    fn remaining(&self, tat: f64, now: f64) -> f64 {
        self.capacity - (tat - now).max(0.0) / self.interval()
    }

    fn check(&self) -> Result<(), String> {
        let ok = |v: f64| v.is_finite() && v > 0.0;
        if !(ok(self.capacity) && ok(self.window) && self.cost.is_finite() && self.cost >= 0.0) {
            return Err(format!(
                "limit {:?}: capacity and window must be > 0 and cost >= 0 (got {}, {}, {})",
                self.key, self.capacity, self.window, self.cost
            ));
        }
        Ok(())
    }
}

#[derive(Debug, PartialEq)]
pub struct Decision {
    pub allowed: bool,
    /// Index of the first limit that refused, or -1.
    pub failed: i64,
    /// 0 when allowed; seconds until the failing bucket holds `cost`; -1 if it never can.
    pub retry_after: f64,
    pub remaining: Vec<f64>,
    /// Seconds until each bucket is full again.
    pub reset: Vec<f64>,
}

pub struct Limiter {
    buckets: DashMap<String, Arc<Mutex<Bucket>>>,
    idle_ttl: f64,
    /// f64 bits of the time after which the next `acquire` sweeps.
    next_sweep: AtomicU64,
}

impl Limiter {
    pub fn new(idle_ttl: f64) -> Self {
        Limiter {
            buckets: DashMap::new(),
            idle_ttl,
            next_sweep: AtomicU64::new(0f64.to_bits()),
        }
    }

    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }

    fn bucket(&self, key: &str, now: f64) -> Arc<Mutex<Bucket>> {
        if let Some(b) = self.buckets.get(key) {
            return b.clone();
        }
        self.buckets
            .entry(key.to_owned())
            .or_insert_with(|| {
                Arc::new(Mutex::new(Bucket {
                    tat: now,
                    last_seen: now,
                }))
            })
            .clone()
    }

    /// All-or-nothing: charge every limit, or none if any would exceed its capacity.
    pub fn acquire(&self, limits: &[Limit<'_>], now: f64) -> Result<Decision, String> {
        for l in limits {
            l.check()?;
        }
        self.maybe_sweep(now);
        // Lock each distinct key once, in key order.
        let mut keys: Vec<&str> = limits.iter().map(|l| l.key).collect();
        keys.sort_unstable();
        keys.dedup();
        let buckets: Vec<_> = keys.iter().map(|k| self.bucket(k, now)).collect();
        let mut guards: Vec<_> = buckets.iter().map(|b| b.lock()).collect();
        let slot = |key: &str| keys.binary_search(&key).expect("key was collected");

        let before: Vec<f64> = guards.iter().map(|g| g.tat.max(now)).collect();
        let mut tat = before.clone();
        let mut refusal = None;
        for (i, l) in limits.iter().enumerate() {
            let s = slot(l.key);
            let new_tat = tat[s] + l.cost * l.interval();
            if l.cost > l.capacity * (1.0 + EPS) {
                refusal = Some((i, -1.0));
                break;
            }
            let over = new_tat - now - l.window;
            if over > l.window * EPS {
                refusal = Some((i, over));
                break;
            }
            tat[s] = new_tat;
        }
        let allowed = refusal.is_none();
        let state = if allowed { &tat } else { &before };
        for (g, &t) in guards.iter_mut().zip(state) {
            if allowed {
                g.tat = t;
            }
            g.last_seen = now;
        }
        let remaining = limits
            .iter()
            .map(|l| l.remaining(state[slot(l.key)], now))
            .collect();
        let reset = limits
            .iter()
            .map(|l| (state[slot(l.key)] - now).max(0.0))
            .collect();
        let (failed, retry_after) = refusal.map_or((-1, 0.0), |(i, r)| (i as i64, r));
        Ok(Decision {
            allowed,
            failed,
            retry_after,
            remaining,
            reset,
        })
    }

    /// Give back (`delta > 0`, clamped at full) or charge without a check (`delta < 0`, may go
    /// into debt, i.e. below zero tokens).
    pub fn adjust(
        &self,
        key: &str,
        capacity: f64,
        window: f64,
        delta: f64,
        now: f64,
    ) -> Result<(), String> {
        Limit {
            key,
            capacity,
            window,
            cost: delta.abs(),
        }
        .check()?;
        let interval = window / capacity;
        if delta >= 0.0 {
            if let Some(b) = self.buckets.get(key).map(|b| b.clone()) {
                let mut g = b.lock();
                g.tat = (g.tat.max(now) - delta * interval).max(now);
                g.last_seen = now;
            }
        } else {
            let b = self.bucket(key, now);
            let mut g = b.lock();
            g.tat = g.tat.max(now) - delta * interval;
            g.last_seen = now;
        }
        Ok(())
    }

    pub fn peek(&self, key: &str, capacity: f64, window: f64, now: f64) -> Result<f64, String> {
        let l = Limit {
            key,
            capacity,
            window,
            cost: 0.0,
        };
        l.check()?;
        Ok(match self.buckets.get(key).map(|b| b.clone()) {
            Some(b) => l.remaining(b.lock().tat, now),
            None => capacity,
        })
    }

    /// Drop buckets that are full (lossless) or untouched for `idle_ttl` seconds. Buckets in use
    /// by a concurrent call (someone holds a clone of the `Arc`) are kept.
    pub fn sweep(&self, now: f64) -> usize {
        let before = self.buckets.len();
        self.buckets.retain(|_, b| {
            if Arc::strong_count(b) > 1 {
                return true;
            }
            let g = b.lock();
            !(g.tat <= now || now - g.last_seen > self.idle_ttl)
        });
        before.saturating_sub(self.buckets.len())
    }

    /// Sweep at most every `min(idle_ttl / 2, 60 s)`; one caller wins the race and does it.
    fn maybe_sweep(&self, now: f64) {
        let due = f64::from_bits(self.next_sweep.load(Ordering::Relaxed));
        if now < due {
            return;
        }
        let next = now + (self.idle_ttl / 2.0).clamp(0.01, 60.0);
        if self
            .next_sweep
            .compare_exchange(
                due.to_bits(),
                next.to_bits(),
                Ordering::AcqRel,
                Ordering::Relaxed,
            )
            .is_ok()
        {
            self.sweep(now);
        }
    }
}

/// Seconds from Python's `time.monotonic()`, so callers can mix explicit and default `now`.
fn monotonic(py: Python<'_>) -> PyResult<f64> {
    static MONOTONIC: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    MONOTONIC
        .import(py, "time", "monotonic")?
        .call0()?
        .extract()
}

fn resolve_now(py: Python<'_>, now: Option<f64>) -> PyResult<f64> {
    match now {
        Some(t) if t.is_finite() => Ok(t),
        Some(t) => Err(PyValueError::new_err(format!(
            "now must be finite, got {t}"
        ))),
        None => monotonic(py),
    }
}

/// (allowed, failed index, retry_after, remaining, reset)
type AcquireResult = (bool, i64, f64, Vec<f64>, Vec<f64>);

#[pyclass(name = "RateLimiter", module = "gateway._core", frozen)]
pub struct PyRateLimiter {
    inner: Limiter,
}

#[pymethods]
impl PyRateLimiter {
    #[new]
    #[pyo3(signature = (idle_ttl_s = 600.0))]
    fn new(idle_ttl_s: f64) -> PyResult<Self> {
        if idle_ttl_s.is_nan() || idle_ttl_s <= 0.0 {
            return Err(PyValueError::new_err("idle_ttl_s must be > 0"));
        }
        Ok(PyRateLimiter {
            inner: Limiter::new(idle_ttl_s),
        })
    }

    #[pyo3(signature = (limits, now = None))]
    fn acquire(
        &self,
        py: Python<'_>,
        limits: Vec<(String, f64, f64, f64)>,
        now: Option<f64>,
    ) -> PyResult<AcquireResult> {
        let now = resolve_now(py, now)?;
        let limits: Vec<Limit<'_>> = limits
            .iter()
            .map(|(k, c, w, cost)| Limit {
                key: k,
                capacity: *c,
                window: *w,
                cost: *cost,
            })
            .collect();
        let d = self
            .inner
            .acquire(&limits, now)
            .map_err(PyValueError::new_err)?;
        Ok((d.allowed, d.failed, d.retry_after, d.remaining, d.reset))
    }

    #[pyo3(signature = (key, capacity, window_s, delta, now = None))]
    fn adjust(
        &self,
        py: Python<'_>,
        key: &str,
        capacity: f64,
        window_s: f64,
        delta: f64,
        now: Option<f64>,
    ) -> PyResult<()> {
        let now = resolve_now(py, now)?;
        self.inner
            .adjust(key, capacity, window_s, delta, now)
            .map_err(PyValueError::new_err)
    }

    #[pyo3(signature = (key, capacity, window_s, now = None))]
    fn peek(
        &self,
        py: Python<'_>,
        key: &str,
        capacity: f64,
        window_s: f64,
        now: Option<f64>,
    ) -> PyResult<f64> {
        let now = resolve_now(py, now)?;
        self.inner
            .peek(key, capacity, window_s, now)
            .map_err(PyValueError::new_err)
    }

    #[pyo3(signature = (now = None))]
    fn sweep(&self, py: Python<'_>, now: Option<f64>) -> PyResult<usize> {
        let now = resolve_now(py, now)?;
        Ok(self.inner.sweep(now))
    }

    fn __len__(&self) -> usize {
        self.inner.len()
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyRateLimiter>()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn one(key: &str, cap: f64, win: f64, cost: f64) -> [Limit<'_>; 1] {
        [Limit {
            key,
            capacity: cap,
            window: win,
            cost,
        }]
    }

    #[test]
    fn burst_then_refill() {
        let l = Limiter::new(600.0);
        for i in 0..10 {
            assert!(
                l.acquire(&one("k", 10.0, 1.0, 1.0), 0.0).unwrap().allowed,
                "{i}"
            );
        }
        let d = l.acquire(&one("k", 10.0, 1.0, 1.0), 0.0).unwrap();
        assert!(!d.allowed);
        assert_eq!(d.failed, 0);
        assert!((d.retry_after - 0.1).abs() < 1e-9);
        assert!(l.acquire(&one("k", 10.0, 1.0, 1.0), 0.1).unwrap().allowed);
    }

    #[test]
    fn all_or_nothing() {
        let l = Limiter::new(600.0);
        let limits = [
            Limit {
                key: "a",
                capacity: 10.0,
                window: 60.0,
                cost: 5.0,
            },
            Limit {
                key: "b",
                capacity: 3.0,
                window: 60.0,
                cost: 5.0,
            },
        ];
        let d = l.acquire(&limits, 0.0).unwrap();
        assert!(!d.allowed);
        assert_eq!((d.failed, d.retry_after), (1, -1.0));
        assert_eq!(l.peek("a", 10.0, 60.0, 0.0).unwrap(), 10.0);
    }

    #[test]
    fn remaining_reset_and_duplicate_keys() {
        let l = Limiter::new(600.0);
        let limits = [
            Limit {
                key: "a",
                capacity: 10.0,
                window: 10.0,
                cost: 2.0,
            },
            Limit {
                key: "a",
                capacity: 10.0,
                window: 10.0,
                cost: 3.0,
            },
        ];
        let d = l.acquire(&limits, 0.0).unwrap();
        assert!(d.allowed);
        assert_eq!(d.remaining, vec![5.0, 5.0]);
        assert_eq!(d.reset, vec![5.0, 5.0]);
    }

    #[test]
    fn adjust_refunds_and_debts() {
        let l = Limiter::new(600.0);
        l.acquire(&one("k", 10.0, 10.0, 8.0), 0.0).unwrap();
        l.adjust("k", 10.0, 10.0, 3.0, 0.0).unwrap();
        assert!((l.peek("k", 10.0, 10.0, 0.0).unwrap() - 5.0).abs() < 1e-9);
        l.adjust("k", 10.0, 10.0, 100.0, 0.0).unwrap();
        assert_eq!(l.peek("k", 10.0, 10.0, 0.0).unwrap(), 10.0);
        l.adjust("k", 10.0, 10.0, -15.0, 0.0).unwrap();
        assert!((l.peek("k", 10.0, 10.0, 0.0).unwrap() + 5.0).abs() < 1e-9);
        assert!(!l.acquire(&one("k", 10.0, 10.0, 1.0), 0.0).unwrap().allowed);
    }

    #[test]
    fn sweep_drops_full_and_idle() {
        let l = Limiter::new(100.0);
        l.acquire(&one("short", 10.0, 1.0, 10.0), 0.0).unwrap();
        l.acquire(&one("long", 10.0, 1000.0, 1.0), 0.0).unwrap();
        assert_eq!(l.sweep(0.5), 0);
        assert_eq!(l.sweep(1.0), 1); // "short" is full again
        assert_eq!(l.len(), 1);
        assert_eq!(l.sweep(200.0), 1); // "long" idle past the ttl
        assert!(l.is_empty());
    }

    #[test]
    fn rejects_bad_limits() {
        let l = Limiter::new(1.0);
        assert!(l.acquire(&one("k", 0.0, 1.0, 1.0), 0.0).is_err());
        assert!(l.acquire(&one("k", 1.0, 1.0, -1.0), 0.0).is_err());
    }

    proptest! {
        /// Admitted cost in any interval [t0, t1] <= capacity + capacity * (t1 - t0) / window.
        #[test]
        fn never_admits_more_than_rate(
            cap in 1.0f64..50.0,
            win in 0.1f64..10.0,
            steps in prop::collection::vec((0.0f64..0.5, 0.0f64..5.0), 1..200),
        ) {
            let l = Limiter::new(1e9);
            let mut now = 0.0;
            let mut admitted = Vec::new();
            for (dt, cost) in steps {
                now += dt;
                if l.acquire(&one("k", cap, win, cost), now).unwrap().allowed {
                    admitted.push((now, cost));
                }
            }
            for i in 0..admitted.len() {
                let mut sum = 0.0;
                for j in i..admitted.len() {
                    sum += admitted[j].1;
                    let span = admitted[j].0 - admitted[i].0;
                    prop_assert!(sum <= cap + cap * span / win + 1e-6 * cap);
                }
            }
        }
    }
}

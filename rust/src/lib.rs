//! `gateway._core`: module wiring only; each hot path lives in its own file.
use pyo3::prelude::*;

pub mod category;
pub mod content;
pub mod injection;
pub mod phone_plans;
pub mod pii;
pub mod prefilter;
pub mod ratelimit;
pub mod schema;
pub mod textnorm;
pub mod tokens;

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    pii::register(m)?;
    tokens::register(m)?;
    ratelimit::register(m)?;
    schema::register(m)?;
    injection::register(m)?;
    content::register(m)?;
    category::register(m)?;
    Ok(())
}

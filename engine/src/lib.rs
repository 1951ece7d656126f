//! stream_app._engine: the compiled domain core of upsell-stream.

use pyo3::prelude::*;

/// The version of the compiled core, to check that the extension is the one built.
#[pyfunction]
fn version() -> &'static str {
    env!("CARGO_PKG_VERSION")
}

#[pymodule]
fn _engine(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(version, m)?)?;
    Ok(())
}

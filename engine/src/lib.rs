//! stream_app._engine: the compiled domain core of upsell-stream (docs/engine.md).

mod accept;
mod attribution;
mod board;
mod cohorts;
mod dedupe;
mod events;
mod expiry;
mod labels;
mod merge;
mod packed;
mod parse;
mod partition;
mod records;
mod util;
mod window_rules;

use pyo3::prelude::*;

/// The version of the compiled core, to check that the extension is the one built.
#[pyfunction]
fn version() -> &'static str {
    env!("CARGO_PKG_VERSION")
}

#[pymodule]
fn _engine(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(version, m)?)?;
    m.add_function(wrap_pyfunction!(parse::accept_offer, m)?)?;
    m.add_function(wrap_pyfunction!(parse::accept_purchase, m)?)?;
    m.add_function(wrap_pyfunction!(accept::accept_batch, m)?)?;
    m.add_function(wrap_pyfunction!(accept::accepted_of, m)?)?;
    m.add_function(wrap_pyfunction!(accept::key_partition, m)?)?;
    m.add_function(wrap_pyfunction!(accept::forward_released, m)?)?;
    m.add_class::<accept::PyAccepted>()?;
    m.add_class::<merge::PyEventTimeMerge>()?;
    m.add_function(wrap_pyfunction!(packed::pack, m)?)?;
    m.add_function(wrap_pyfunction!(packed::unpack, m)?)?;
    m.add_function(wrap_pyfunction!(packed::pack_entries, m)?)?;
    m.add_function(wrap_pyfunction!(packed::pack_chunks, m)?)?;
    m.add_function(wrap_pyfunction!(packed::chunk_header, m)?)?;
    m.add_function(wrap_pyfunction!(packed::merge_chunks, m)?)?;
    m.add_function(wrap_pyfunction!(packed::unpack_values, m)?)?;
    m.add_class::<partition::PyCustomerPartition>()?;
    m.add_class::<board::PyRatesBoard>()?;
    m.add_class::<attribution::PyAttribution>()?;
    m.add_class::<cohorts::PyWindowCounts>()?;
    m.add_class::<dedupe::PyEventIdMemory>()?;
    m.add_class::<labels::PyLabelCap>()?;
    Ok(())
}

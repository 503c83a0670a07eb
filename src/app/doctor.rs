//! `cbqa doctor`: which native libraries this binary finds and uses.

use anyhow::Result;

/// Print one line per library or setting found.
pub fn run() -> Result<()> {
    for (k, v) in cbqa::native::report() {
        println!("{k:<20} {v}");
    }
    Ok(())
}

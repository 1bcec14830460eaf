//! Ctrl-C for long runs: the first press sets a flag that the training loop polls ([`requested`]) so it can save a
//! checkpoint and exit cleanly; a second press quits at once (exit status 130).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

use crate::error::{Error, Result};

static REQUESTED: AtomicBool = AtomicBool::new(false);
static INSTALLED: OnceLock<std::result::Result<(), String>> = OnceLock::new();

/// Install the Ctrl-C handler (idempotent: later calls return the first call's outcome).
pub fn install() -> Result<()> {
    let outcome = INSTALLED.get_or_init(|| {
        ctrlc::set_handler(|| {
            if REQUESTED.swap(true, Ordering::SeqCst) {
                eprintln!("\ninterrupted again: quitting without saving");
                std::process::exit(130);
            }
            eprintln!("\ninterrupt: saving a checkpoint and stopping (press Ctrl-C again to quit at once)");
        })
        .map_err(|e| e.to_string())
    });
    outcome.clone().map_err(|e| Error::Usage(format!("cannot install the Ctrl-C handler: {e}")))
}

/// Whether Ctrl-C has been pressed (or [`request`] called) since the start or the last [`clear`].
pub fn requested() -> bool {
    REQUESTED.load(Ordering::SeqCst)
}

/// Ask the running loop to stop as if Ctrl-C had been pressed (for tests and embedding programs).
pub fn request() {
    REQUESTED.store(true, Ordering::SeqCst);
}

/// Forget an earlier request (e.g. before starting another run in the same process).
pub fn clear() {
    REQUESTED.store(false, Ordering::SeqCst);
}

// Tests live in tests/train_infra.rs: the flag is process-wide, and setting it here could stop a training test
// running in parallel in the library's test binary.

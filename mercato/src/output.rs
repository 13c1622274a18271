//! What the commands print on standard output.
//!
//! `println!` panics when the reader has gone (`mercato loadgen | head`). A command whose reader
//! stopped early carries on without output instead: a `deploy switch` half done because its
//! output was cut would be worse than output lost. Any other failure to write is reported once
//! on standard error.

use std::fmt;
use std::io::{ErrorKind, Write as _};
use std::sync::atomic::{AtomicBool, Ordering};

/// Set once writing failed: nothing more is tried or reported.
static CLOSED: AtomicBool = AtomicBool::new(false);

/// Writes `text` to standard output.
pub fn write(text: fmt::Arguments<'_>) {
    if CLOSED.load(Ordering::Relaxed) {
        return;
    }
    let mut stdout = std::io::stdout().lock();
    let written = stdout.write_fmt(text).and_then(|()| stdout.flush());
    if let Err(error) = written {
        CLOSED.store(true, Ordering::Relaxed);
        if error.kind() != ErrorKind::BrokenPipe {
            eprintln!("mercato: cannot write to standard output: {error}");
        }
    }
}

/// `print!` that survives a reader that stopped early (see [`write`]).
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => {
        $crate::output::write(format_args!($($arg)*))
    };
}

/// `println!` that survives a reader that stopped early (see [`write`]).
#[macro_export]
macro_rules! sayln {
    ($($arg:tt)*) => {
        $crate::output::write(format_args!("{}\n", format_args!($($arg)*)))
    };
}

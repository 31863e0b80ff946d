//! What each command does, one module per command family; each takes its
//! parsed arguments from [`crate::cli`], calls [`crate::client`] and prints
//! with [`crate::display`].

/// Prints a line to stdout. A closed pipe (`permafrostctl ... | head`) is the
/// reader's choice, not a reason to panic, so write errors are ignored.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock(), $($arg)*);
    }};
}

pub mod approve;
pub mod audit;
pub mod ca;
pub mod ceremony;
pub mod cert;
pub mod exclusions;
pub mod group_output;
pub mod key_file;
pub mod keygroup;
pub mod node;
pub mod status;
pub mod withdraw;

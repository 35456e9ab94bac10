//! `check-config`: the effective configuration, secrets redacted.

use std::process::ExitCode;

use crate::config::RawSettings;

/// Prints `effective`: the file and environment with defaults filled in, under
/// the names the file uses. The caller has typed it already, so what is shown
/// is exactly what passed.
pub fn print(effective: &RawSettings) -> ExitCode {
    match toml::to_string_pretty(effective) {
        Ok(text) => {
            println!("# effective configuration (defaults, file, environment); secrets redacted");
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("cannot render the configuration: {error}");
            ExitCode::FAILURE
        }
    }
}

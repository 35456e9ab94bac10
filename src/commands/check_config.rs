//! `check-config`: the effective configuration, secrets redacted.

use std::process::ExitCode;

use crate::config::Settings;

pub fn print(settings: &Settings) -> ExitCode {
    match toml::to_string_pretty(settings) {
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

//! The `swr-scan-bridge` binary: parse the command line, load settings, run
//! the chosen command. Exit codes: 0 success, 1 runtime failure, 2 bad
//! configuration or usage.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use swr_scan_bridge::config::{CONFIG_PATH_ENV, ConfigError, RawSettings, Settings};
use swr_scan_bridge::hss::HssApi;
use swr_scan_bridge::startup::{Application, StartupError};
use swr_scan_bridge::{commands, telemetry};

#[derive(Parser)]
#[command(
    name = "swr-scan-bridge",
    version,
    about = "SWR push webhooks in, batched HSS image scans out"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args)]
struct ConfigArg {
    /// TOML configuration file (environment overrides: SWR_SCAN_BRIDGE__SECTION__KEY).
    #[arg(long, env = CONFIG_PATH_ENV, value_name = "FILE")]
    config: PathBuf,
}

#[derive(Subcommand)]
enum Command {
    /// Run the service until SIGTERM/SIGINT, then drain.
    Serve(ConfigArg),
    /// Validate the configuration and print it with every secret redacted.
    CheckConfig(ConfigArg),
    /// Print the HTTP headers a sender must add for a source (for curl and tests).
    Sign {
        #[command(flatten)]
        config: ConfigArg,
        /// The source (its `name` in [[sources]]).
        #[arg(long)]
        source: String,
        /// The webhook body; read from stdin when absent.
        #[arg(long, value_name = "FILE")]
        body: Option<PathBuf>,
    },
    /// Run the whole flow locally: embedded store, stand-in HSS, sample pushes.
    Demo {
        /// The HSS API the bridge sends batches to: batch-scan or scan-tasks.
        #[arg(long, value_name = "API", default_value = "batch-scan")]
        api: HssApi,
    },
    /// Print an image's history from a running bridge: was it scanned, when, in which HSS request?
    History {
        /// namespace/name:tag, or namespace/name@sha256:<hex> for a push by digest.
        image: String,
        /// The bridge's base URL.
        #[arg(
            long,
            env = "SWR_SCAN_BRIDGE_URL",
            value_name = "URL",
            default_value = "http://127.0.0.1:8080"
        )]
        url: String,
        /// Where the admin token is: env:NAME or file:PATH (a literal is refused: ps shows it).
        #[arg(long, value_name = "REF", default_value = commands::history::DEFAULT_TOKEN_REF)]
        token: String,
        /// Print the bridge's JSON answer instead of one line per event.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(ConfigArg { config }) => {
            let settings = match load(&config) {
                Ok(settings) => settings,
                Err(code) => return code,
            };
            telemetry::init(&settings.log);
            run_async(serve(settings))
        }
        Command::CheckConfig(ConfigArg { config }) => {
            let effective = RawSettings::load(&config)
                .and_then(|raw| Settings::parse(&raw).map(|_| raw))
                .map_err(config_error);
            match effective {
                Ok(effective) => commands::check_config::print(&effective),
                Err(code) => code,
            }
        }
        Command::Sign {
            config,
            source,
            body,
        } => match load(&config.config) {
            Ok(settings) => commands::sign::print(&settings, &source, body.as_deref()),
            Err(code) => code,
        },
        Command::Demo { api } => {
            run_async(async { commands::demo::run(api).await.map_err(|e| e.to_string()) })
        }
        Command::History {
            image,
            url,
            token,
            json,
        } => history(&image, &url, &token, json),
    }
}

fn history(image: &str, url: &str, token: &str, json: bool) -> ExitCode {
    let Some(runtime) = runtime() else {
        return ExitCode::FAILURE;
    };
    match runtime.block_on(commands::history::run(image, url, token, json)) {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::from(error.exit_code())
        }
    }
}

fn load(path: &std::path::Path) -> Result<Settings, ExitCode> {
    Settings::load(path).map_err(config_error)
}

fn config_error(error: ConfigError) -> ExitCode {
    eprintln!("configuration error: {error}");
    ExitCode::from(2)
}

async fn serve(settings: Settings) -> Result<(), String> {
    let application = Application::build(settings).await.map_err(|error| {
        tracing::error!(%error, "cannot start");
        error.to_string()
    })?;
    application
        .run_until_stopped()
        .await
        .map_err(|error: StartupError| error.to_string())
}

fn runtime() -> Option<tokio::runtime::Runtime> {
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => Some(runtime),
        Err(error) => {
            eprintln!("cannot start the async runtime: {error}");
            None
        }
    }
}

fn run_async(job: impl std::future::Future<Output = Result<(), String>>) -> ExitCode {
    let Some(runtime) = runtime() else {
        return ExitCode::FAILURE;
    };
    match runtime.block_on(job) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

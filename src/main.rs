//! The `alterego` command: `serve` (default), `migrate` or `import-mikoto`.

use std::io::Write;
use std::process::ExitCode;

use alterego::config::{Config, LogFormat};
use alterego::state::AppState;
use tracing_subscriber::EnvFilter;

const USAGE: &str = "usage: alterego [serve|migrate|import-mikoto]\n\n  serve          run the server (default)\n  migrate        apply database migrations and exit\n  import-mikoto  copy a Mikoto database into alterego's (see `alterego import-mikoto --help`)\n\nConfiguration comes from the environment and .env; see .env.example.";

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let command = std::env::args().nth(1).unwrap_or_else(|| "serve".into());
    if matches!(command.as_str(), "-h" | "--help" | "help") {
        // Ignore a closed stdout (`alterego --help | head`).
        let _ = writeln!(std::io::stdout(), "{USAGE}");
        return ExitCode::SUCCESS;
    }
    let import = if command == "import-mikoto" {
        let args: Vec<String> = std::env::args().skip(2).collect();
        match alterego::import::cli::parse(&args) {
            Ok(alterego::import::cli::Command::Help) => {
                let _ = writeln!(std::io::stdout(), "{}", alterego::import::cli::USAGE);
                return ExitCode::SUCCESS;
            }
            Ok(alterego::import::cli::Command::Import { options, json }) => Some((options, json)),
            Err(e) => {
                eprintln!("alterego import-mikoto: {e}\n\n{}", alterego::import::cli::USAGE);
                return ExitCode::from(2);
            }
        }
    } else {
        None
    };
    let config = match Config::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("alterego: {e}");
            return ExitCode::FAILURE;
        }
    };
    // The import prints its report on stdout: its logs go to stderr.
    init_tracing(&config, command == "import-mikoto");
    let result = match command.as_str() {
        "serve" => with_database(config, serve).await,
        "migrate" => with_database(config, migrate).await,
        "import-mikoto" => match import {
            Some((options, json)) => with_database(config, |c| import_mikoto(c, options, json)).await,
            None => Err("import-mikoto: no options".into()),
        },
        other => Err(format!("unknown command `{other}`\n\n{USAGE}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("alterego: {e}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing(config: &Config, to_stderr: bool) {
    let filter = EnvFilter::try_new(&config.rust_log).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match (config.log_format, to_stderr) {
        (LogFormat::Json, false) => builder.json().init(),
        (LogFormat::Text, false) => builder.init(),
        (LogFormat::Json, true) => builder.json().with_writer(std::io::stderr).init(),
        (LogFormat::Text, true) => builder.with_writer(std::io::stderr).init(),
    }
}

/// Runs `work` with the configuration's database, first starting the private development
/// cluster when it is needed; that cluster is stopped once `work` is done, however it ended.
async fn with_database<F, Fut>(mut config: Config, work: F) -> Result<(), String>
where
    F: FnOnce(Config) -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let embedded = alterego::embedded_postgres::prepare(&mut config)
        .await
        .map_err(|e| e.to_string())?;
    let result = work(config).await;
    if let Some(pg) = embedded {
        pg.stop().await;
    }
    result
}

async fn migrate(config: Config) -> Result<(), String> {
    let pool = alterego::db::connect(&config.database_url, 2, !config.is_production())
        .await
        .map_err(|e| e.to_string())?;
    alterego::db::migrate(&pool).await.map_err(|e| e.to_string())?;
    tracing::info!("migrations applied");
    Ok(())
}

/// Migrates the target, imports, and prints the report on stdout.
async fn import_mikoto(config: Config, options: alterego::import::Options, json: bool) -> Result<(), String> {
    let pool = alterego::db::connect(&config.database_url, 2, !config.is_production())
        .await
        .map_err(|e| e.to_string())?;
    alterego::db::migrate(&pool).await.map_err(|e| e.to_string())?;
    let report = alterego::import::run(&pool, &options)
        .await
        .map_err(|e| e.to_string())?;
    let text = if json {
        serde_json::to_string(&report).map_err(|e| e.to_string())?
    } else {
        report.to_string()
    };
    let _ = writeln!(std::io::stdout(), "{text}");
    Ok(())
}

async fn serve(config: Config) -> Result<(), String> {
    if config.jwt_secret_generated {
        tracing::warn!("JWT_SECRET is not set: using a random secret; tokens will not survive a restart");
    }
    let pool = alterego::db::connect(
        &config.database_url,
        config.database_max_connections,
        !config.is_production(),
    )
    .await
    .map_err(|e| e.to_string())?;
    if config.automigrate {
        alterego::db::migrate(&pool).await.map_err(|e| e.to_string())?;
    }
    let bind = config.bind_addr;
    let state = AppState::new(config, pool, None).await.map_err(|e| e.to_string())?;
    let listener = tokio::net::TcpListener::bind(bind)
        .await
        .map_err(|e| format!("cannot listen on {bind}: {e}"))?;
    tracing::info!(address = %bind, "alterego listening");
    let draining = state.clone();
    alterego::serve(listener, state, async move {
        shutdown_signal().await;
        tracing::info!("shutting down: draining sockets and in-flight requests");
        draining.start_draining();
    })
    .await
    .map_err(|e| e.to_string())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

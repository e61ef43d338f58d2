//! A private PostgreSQL cluster for `cargo run` with no configuration (docs/configuration.md).
//!
//! When `DATABASE_URL` is unset outside production and nothing answers at the default address,
//! [`prepare`] initialises a cluster in `EMBEDDED_DATABASE_DIR` (default `./data/postgres`) with
//! the PostgreSQL server binaries installed on the machine, starts it listening on a Unix socket
//! in that directory only (no TCP), and points the configuration at it. [`EmbeddedPostgres::stop`]
//! stops it when the server exits; dropping the handle stops it too, on any other way out.
//!
//! PostgreSQL refuses to run as root. When alterego runs as root the binaries run as the
//! `postgres` system user (`runuser -u postgres --`), which then owns the directory; without
//! such a user the start fails with a message saying what to do.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::PgConnectOptions;
use tokio::process::Command;

use crate::config::Config;

/// The cluster's superuser (trusted on its private socket).
const SUPERUSER: &str = "postgres";
/// The account the binaries run as when alterego runs as root.
const SYSTEM_USER: &str = "postgres";
/// The settings file alterego rewrites at every start (included from `postgresql.conf`).
const SETTINGS: &str = "alterego.conf";

#[derive(Debug, thiserror::Error)]
#[error("private PostgreSQL cluster: {0}")]
pub struct EmbeddedError(String);

/// A running private cluster.
pub struct EmbeddedPostgres {
    dir: PathBuf,
    bin: PathBuf,
    /// The system account the binaries run as (`Some` when alterego runs as root).
    run_as: Option<String>,
    /// Whether this process started the server (and so stops it).
    started: bool,
}

/// Starts the private cluster if the configuration asks for the development default and nothing
/// answers there; then `config.database_url` points at it.
pub async fn prepare(config: &mut Config) -> Result<Option<EmbeddedPostgres>, EmbeddedError> {
    if !config.database_url_default || config.is_production() {
        return Ok(None);
    }
    let options = PgConnectOptions::from_str(&config.database_url).map_err(|e| EmbeddedError(e.to_string()))?;
    let address = format!("{}:{}", options.get_host(), options.get_port());
    if answers(&address).await {
        return Ok(None);
    }
    tracing::info!(
        %address,
        "DATABASE_URL is unset and nothing answers at the default address: starting a private PostgreSQL cluster"
    );
    let pg = EmbeddedPostgres::start(&config.embedded_database_dir).await?;
    config.database_url = pg.url(options.get_database().unwrap_or("alterego"));
    Ok(Some(pg))
}

/// Whether something accepts TCP connections at `address` (within 2 s).
async fn answers(address: &str) -> bool {
    matches!(
        tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(address)).await,
        Ok(Ok(_))
    )
}

impl EmbeddedPostgres {
    /// Initialises the cluster in `dir` if it is new, then starts it (or adopts a server already
    /// running there).
    pub async fn start(dir: &Path) -> Result<EmbeddedPostgres, EmbeddedError> {
        let bin = server_binaries()?;
        let run_as = run_as()?;
        std::fs::create_dir_all(dir).map_err(|e| EmbeddedError(format!("cannot create {}: {e}", dir.display())))?;
        let dir = std::fs::canonicalize(dir).map_err(|e| EmbeddedError(format!("{}: {e}", dir.display())))?;
        if let Some(account) = &run_as {
            give_to(&dir, account)?;
        }
        let mut pg = EmbeddedPostgres {
            dir,
            bin,
            run_as: run_as.map(|a| a.name),
            started: false,
        };
        if !pg.dir.join("PG_VERSION").exists() {
            pg.init().await?;
        }
        pg.write_settings()?;
        let status = pg.pg_ctl(&["status"]).await?;
        if status.status.success() {
            tracing::info!(data = %pg.dir.display(), "a private PostgreSQL cluster is already running there; using it");
        } else {
            let log = pg.dir.join("server.log");
            let log = log.to_string_lossy();
            let out = pg.pg_ctl(&["-l", &log, "-w", "-t", "60", "start"]).await?;
            if !out.status.success() {
                return Err(EmbeddedError(format!(
                    "pg_ctl start failed: {}{}",
                    text(&out),
                    pg.log_tail()
                )));
            }
            pg.started = true;
        }
        let version = std::fs::read_to_string(pg.dir.join("PG_VERSION")).unwrap_or_default();
        tracing::info!(
            version = %version.trim(),
            data = %pg.dir.display(),
            "private PostgreSQL cluster ready (Unix socket only); its data lives in this directory"
        );
        Ok(pg)
    }

    /// The connection URL of `database` through the cluster's socket.
    pub fn url(&self, database: &str) -> String {
        format!(
            "postgres://{SUPERUSER}@localhost/{database}?host={}",
            percent_encode(&self.dir.to_string_lossy())
        )
    }

    pub fn data_dir(&self) -> &Path {
        &self.dir
    }

    /// Stops the server if this process started it.
    pub async fn stop(mut self) {
        if !self.started {
            return;
        }
        self.started = false;
        match self.pg_ctl(&["-m", "fast", "-w", "-t", "30", "stop"]).await {
            Ok(out) if out.status.success() => {
                tracing::info!(data = %self.dir.display(), "private PostgreSQL cluster stopped")
            }
            Ok(out) => tracing::warn!(output = %text(&out), "could not stop the private PostgreSQL cluster"),
            Err(e) => tracing::warn!(error = %e, "could not stop the private PostgreSQL cluster"),
        }
    }

    async fn init(&self) -> Result<(), EmbeddedError> {
        if std::fs::read_dir(&self.dir)
            .map(|mut d| d.next().is_some())
            .unwrap_or(false)
        {
            return Err(EmbeddedError(format!(
                "{} is neither empty nor a PostgreSQL data directory; set EMBEDDED_DATABASE_DIR to another directory",
                self.dir.display()
            )));
        }
        tracing::info!(data = %self.dir.display(), "initialising a private PostgreSQL cluster");
        let dir = self.dir.to_string_lossy();
        let out = self
            .run(
                "initdb",
                &[
                    "-D",
                    &dir,
                    "-U",
                    SUPERUSER,
                    "--auth-local=trust",
                    "--auth-host=reject",
                    "-E",
                    "UTF8",
                    "--no-locale",
                ],
            )
            .await?;
        if !out.status.success() {
            return Err(EmbeddedError(format!(
                "initdb failed (the directory and its parents must be accessible to the user \
                 PostgreSQL runs as): {}",
                text(&out)
            )));
        }
        let conf = self.dir.join("postgresql.conf");
        let mut settings =
            std::fs::read_to_string(&conf).map_err(|e| EmbeddedError(format!("{}: {e}", conf.display())))?;
        settings.push_str(&format!(
            "\n# alterego's private cluster: see {SETTINGS}\ninclude_if_exists = '{SETTINGS}'\n"
        ));
        std::fs::write(&conf, settings).map_err(|e| EmbeddedError(format!("{}: {e}", conf.display())))
    }

    /// Rewritten at every start, so a moved directory still gets its own socket path.
    fn write_settings(&self) -> Result<(), EmbeddedError> {
        let socket_dir = self.dir.to_string_lossy().replace('\'', "''");
        let settings = format!(
            "# Written by alterego at every start: no TCP, one Unix socket in this directory.\n\
             listen_addresses = ''\n\
             unix_socket_directories = '{socket_dir}'\n"
        );
        let path = self.dir.join(SETTINGS);
        std::fs::write(&path, settings).map_err(|e| EmbeddedError(format!("{}: {e}", path.display())))?;
        if let Some(name) = &self.run_as {
            give_to(&path, &account(name)?)?;
        }
        Ok(())
    }

    async fn pg_ctl(&self, args: &[&str]) -> Result<Output, EmbeddedError> {
        let dir = self.dir.to_string_lossy();
        let mut all = vec!["-D", &dir];
        all.extend_from_slice(args);
        self.run("pg_ctl", &all).await
    }

    /// Runs one of the server binaries (as the system user when alterego runs as root), in the
    /// data directory so that it never needs access to the caller's working directory.
    async fn run(&self, program: &str, args: &[&str]) -> Result<Output, EmbeddedError> {
        let path = self.bin.join(program);
        let mut cmd = match &self.run_as {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(&path);
                c
            }
            None => Command::new(&path),
        };
        cmd.args(args)
            .current_dir(&self.dir)
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true);
        cmd.output()
            .await
            .map_err(|e| EmbeddedError(format!("cannot run {}: {e}", path.display())))
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        let tail = lines[lines.len().saturating_sub(5)..].join("\n");
        if tail.is_empty() {
            String::new()
        } else {
            format!("\nserver.log:\n{tail}")
        }
    }
}

impl Drop for EmbeddedPostgres {
    /// A way out that did not call [`EmbeddedPostgres::stop`] (an error, a panic) still stops the
    /// server; blocking is acceptable on the way out.
    fn drop(&mut self) {
        if !self.started {
            return;
        }
        let pg_ctl = self.bin.join("pg_ctl");
        let mut cmd = match &self.run_as {
            Some(user) => {
                let mut c = std::process::Command::new("runuser");
                c.args(["-u", user, "--"]).arg(&pg_ctl);
                c
            }
            None => std::process::Command::new(&pg_ctl),
        };
        let _ = cmd
            .arg("-D")
            .arg(&self.dir)
            .args(["-m", "fast", "-w", "stop"])
            .current_dir(&self.dir)
            .output();
    }
}

/// The directory holding `initdb` and `pg_ctl`: `pg_config --bindir`, else the newest of
/// Debian's `/usr/lib/postgresql/<version>/bin`, else whatever `PATH` finds.
fn server_binaries() -> Result<PathBuf, EmbeddedError> {
    let has_tools = |dir: &Path| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file();
    if let Ok(out) = std::process::Command::new("pg_config").arg("--bindir").output()
        && out.status.success()
    {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if has_tools(&dir) {
            return Ok(dir);
        }
    }
    let mut debian: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_string_lossy().parse::<u32>().ok()?;
            Some((version, e.path().join("bin")))
        })
        .filter(|(_, bin)| has_tools(bin))
        .collect();
    debian.sort();
    if let Some((_, bin)) = debian.pop() {
        return Ok(bin);
    }
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .find(|dir| has_tools(dir))
        .ok_or_else(|| {
            EmbeddedError(
                "DATABASE_URL is unset, nothing answers at the default address, and no PostgreSQL \
                 server binaries (initdb, pg_ctl) were found: install PostgreSQL (Debian: \
                 apt-get install postgresql) or set DATABASE_URL"
                    .into(),
            )
        })
}

/// A system account, from `/etc/passwd`.
struct Account {
    name: String,
    uid: u32,
    gid: u32,
}

fn account(name: &str) -> Result<Account, EmbeddedError> {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.first() == Some(&name))
        .and_then(|f| {
            Some(Account {
                name: name.to_string(),
                uid: f.get(2)?.parse().ok()?,
                gid: f.get(3)?.parse().ok()?,
            })
        })
        .ok_or_else(|| {
            EmbeddedError(format!(
                "alterego runs as root, PostgreSQL refuses to run as root, and there is no `{name}` \
                 system user to run it as: create one (Debian's postgresql package does), run \
                 alterego as an ordinary user, or set DATABASE_URL"
            ))
        })
}

/// The account to run the server binaries as: `None` (this process's) unless it is root.
fn run_as() -> Result<Option<Account>, EmbeddedError> {
    if effective_uid() == Some(0) {
        account(SYSTEM_USER).map(Some)
    } else {
        Ok(None)
    }
}

/// The effective uid, from the `Uid:` line of `/proc/self/status` (real, effective, …).
fn effective_uid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

fn give_to(path: &Path, account: &Account) -> Result<(), EmbeddedError> {
    std::os::unix::fs::chown(path, Some(account.uid), Some(account.gid))
        .map_err(|e| EmbeddedError(format!("cannot give {} to {}: {e}", path.display(), account.name)))
}

fn text(out: &Output) -> String {
    let mut s = String::from_utf8_lossy(&out.stderr).trim().to_string();
    if s.is_empty() {
        s = String::from_utf8_lossy(&out.stdout).trim().to_string();
    }
    s
}

/// Percent-encodes everything but unreserved characters and `/` (a socket path in a URL query).
fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b'/' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_urls_are_percent_encoded() {
        assert_eq!(percent_encode("/srv/my data/pg"), "/srv/my%20data/pg");
        let pg = EmbeddedPostgres {
            dir: PathBuf::from("/srv/alter ego/postgres"),
            bin: PathBuf::new(),
            run_as: None,
            started: false,
        };
        let url = pg.url("alterego");
        let options = PgConnectOptions::from_str(&url).expect("a valid URL");
        assert_eq!(options.get_socket(), Some(&PathBuf::from("/srv/alter ego/postgres")));
        assert_eq!(options.get_database(), Some("alterego"));
        assert_eq!(options.get_username(), "postgres");
    }

    #[test]
    fn the_effective_uid_is_read() {
        assert!(effective_uid().is_some());
    }
}

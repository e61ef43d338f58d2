//! What the server logs during one test: a `tracing` subscriber set as the default of the test's
//! thread. `#[tokio::test]` runs on a current-thread runtime, so the server's tasks run on that
//! thread and their events are captured too (blocking-pool threads are not).

use std::io::Write;
use std::sync::{Arc, Mutex};

use tracing::subscriber::DefaultGuard;
use tracing_subscriber::fmt::MakeWriter;

#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl Write for Buffer {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Buffer {
    type Writer = Buffer;

    fn make_writer(&'a self) -> Buffer {
        self.clone()
    }
}

/// Captured log lines (the server's text format, without colours), until dropped.
pub struct Logs {
    buffer: Buffer,
    _guard: DefaultGuard,
}

impl Logs {
    /// Captures every `info` and above event of this thread from now on.
    pub fn capture() -> Logs {
        Logs::install("info")
    }

    /// Captures only the SQL statements this thread's server runs (sqlx's `sqlx::query`
    /// events), one line each.
    pub fn capture_queries() -> Logs {
        Logs::install("sqlx::query=trace")
    }

    fn install(filter: &str) -> Logs {
        let buffer = Buffer::default();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(buffer.clone())
            .with_ansi(false)
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .finish();
        Logs {
            buffer,
            _guard: tracing::subscriber::set_default(subscriber),
        }
    }

    /// Takes the statements captured so far (see [`Logs::capture_queries`]).
    pub fn take_queries(&self) -> Vec<String> {
        let mut buffer = self.buffer.0.lock().unwrap_or_else(|p| p.into_inner());
        let text = String::from_utf8_lossy(&buffer).into_owned();
        buffer.clear();
        text.lines()
            .filter(|l| l.contains("sqlx::query"))
            .map(str::to_owned)
            .collect()
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.buffer.0.lock().unwrap_or_else(|p| p.into_inner())).into_owned()
    }

    /// The lines that contain `needle`.
    pub fn lines_with(&self, needle: &str) -> Vec<String> {
        self.text()
            .lines()
            .filter(|l| l.contains(needle))
            .map(str::to_owned)
            .collect()
    }
}

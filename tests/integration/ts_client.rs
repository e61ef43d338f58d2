//! Issue 16: a TypeScript client generated from the served `/api.json` works as written.
//!
//! `clients/typescript-check` (installed from its committed lockfile by `./scripts/test.sh`)
//! runs three steps against a live test server, each of which must succeed:
//!
//! 1. `openapi-typescript <server>/api.json -o src/api.d.ts` generates the types;
//! 2. `tsc --strict -p .` compiles `src/calls.ts`, typical openapi-fetch calls written only with
//!    the fields each call needs (a one-field PATCH, an invite with an empty body, a ban without a
//!    reason, an attachment given by its URL alone), against those types — a call that does not
//!    compile means the document describes the API wrongly;
//! 3. `node dist/calls.js` runs the calls against the same server and exits non-zero on any
//!    unexpected status or shape.
//!
//! Registration is rate-limited per client IP (5 an hour) and the script registers two users
//! from 127.0.0.1, which the test server trusts as a proxy (`TRUSTED_PROXIES=127.0.0.1`), so the
//! script sends a random `X-Forwarded-For` with each request, as `TestApp::call` does: the per-IP
//! limits never decide the outcome, however the test is run or repeated.
//!
//! The generated `src/api.d.ts` and the compiled `dist/` stay in the folder (git-ignored), so a
//! failing run can be reproduced there with `./check.sh build`.

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;

use tokio::process::Command;

use crate::common::TestApp;

/// Generous: `tsc` on a busy two-core machine that is also compiling Rust.
const STEP_TIMEOUT: Duration = Duration::from_secs(300);

/// `clients/typescript-check`, after checking that its packages are installed.
fn check_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("clients")
        .join("typescript-check");
    assert!(
        dir.join("node_modules").join(".bin").is_dir(),
        "{}/node_modules is missing: run ./scripts/test.sh (it installs clients/typescript-check from its lockfile)",
        dir.display()
    );
    dir
}

/// Runs one step to completion and panics with its output unless it succeeded.
async fn run_step(name: &str, dir: &Path, program: &Path, args: &[&str], base: &str) -> Output {
    let output = Command::new(program)
        .args(args)
        .current_dir(dir)
        .env("ALTEREGO_URL", base)
        // Plain output in the test log (openapi-typescript colours it otherwise).
        .env("NO_COLOR", "1")
        .env("FORCE_COLOR", "0")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "{name}: could not run {} (Node.js 20+ on PATH?): {e}",
                program.display()
            )
        });
    let output = tokio::time::timeout(STEP_TIMEOUT, output.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("{name} did not finish within {STEP_TIMEOUT:?}"))
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{name} failed ({}):\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}",
        output.status
    );
    // Shown with --nocapture, or when a later step fails.
    println!("--- {name} ({}) ---\n{stdout}{stderr}", output.status);
    output
}

#[tokio::test]
async fn typescript_client_generated_from_api_json_compiles_and_runs() {
    let dir = check_dir();
    let bin = dir.join("node_modules").join(".bin");
    let app = TestApp::spawn().await;
    let base = app.base.clone();

    // Nothing from an earlier run may stand in for this one's output.
    let _ = std::fs::remove_file(dir.join("src").join("api.d.ts"));
    let _ = std::fs::remove_dir_all(dir.join("dist"));

    let api_json = format!("{base}/api.json");
    run_step(
        "openapi-typescript",
        &dir,
        &bin.join("openapi-typescript"),
        &[&api_json, "-o", "src/api.d.ts"],
        &base,
    )
    .await;
    let generated = std::fs::read_to_string(dir.join("src").join("api.d.ts")).expect("src/api.d.ts was generated");
    assert!(
        generated.contains("export interface paths") && generated.contains("\"/users/me\""),
        "src/api.d.ts does not describe the API:\n{generated:.2000}"
    );

    run_step(
        "tsc --strict -p .",
        &dir,
        &bin.join("tsc"),
        &["--strict", "-p", "."],
        &base,
    )
    .await;
    assert!(
        dir.join("dist").join("calls.js").is_file(),
        "tsc emitted no dist/calls.js"
    );

    let out = run_step("node dist/calls.js", &dir, Path::new("node"), &["dist/calls.js"], &base).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.lines().any(|l| l == "all calls passed"),
        "node dist/calls.js exited 0 without finishing:\n{stdout}"
    );
}

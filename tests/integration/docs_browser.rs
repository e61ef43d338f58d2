//! The API reference page renders in a real headless browser and lists the operations
//! (spec §4.19), with only what alterego itself serves (its CSP forbids anything else).

use std::process::Command;

use crate::common::TestApp;

/// Runs headless Chromium on `url` and returns the DOM after the page's scripts ran.
fn rendered_dom(url: &str) -> String {
    let browser = std::env::var("CHROMIUM").unwrap_or_else(|_| "chromium".into());
    let profile = std::env::temp_dir().join(format!("alterego-chromium-{}", uuid::Uuid::now_v7().simple()));
    let out = Command::new(&browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--virtual-time-budget=15000",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(url)
        .output()
        .unwrap_or_else(|e| panic!("cannot run `{browser}` (install Debian's chromium; scripts/test.sh does): {e}"));
    let _ = std::fs::remove_dir_all(&profile);
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The visible text of a DOM dump: scripts, styles and tags removed.
fn visible_text(dom: &str) -> String {
    let mut text = String::new();
    let mut rest = dom;
    while let Some(start) = rest.find('<') {
        text.push_str(&rest[..start]);
        let tail = &rest[start..];
        let skip_to = ["<script", "<style"]
            .iter()
            .find(|t| tail.starts_with(**t))
            .and_then(|t| tail.find(&format!("</{}>", &t[1..])))
            .or_else(|| tail.find('>'));
        match skip_to {
            Some(end) => {
                text.push(' ');
                rest = &tail[end + 1..];
            }
            None => break,
        }
    }
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docs_page_renders_the_operations() {
    let app = TestApp::spawn().await;
    let url = app.url("/docs");
    let expected = [
        "alterego",
        "POST /account/register",
        "POST /account/login",
        "GET /users/me",
        "PATCH /users/me",
    ];
    // The reference renders its sections progressively; on a machine busy with the rest of the
    // suite one dump may come before the later sections. A few attempts, then the verdict.
    let mut text = String::new();
    for _ in 0..3 {
        let url = url.clone();
        let dom = tokio::task::spawn_blocking(move || rendered_dom(&url))
            .await
            .expect("browser task");
        text = visible_text(&dom);
        if expected.iter().all(|e| text.contains(e)) {
            break;
        }
    }
    for expected in expected {
        assert!(
            text.contains(expected),
            "the rendered page does not show `{expected}`: {text:.2000}"
        );
    }
}

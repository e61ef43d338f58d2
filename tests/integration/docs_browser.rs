//! The API reference page renders in a real headless browser and lists the operations
//! (spec §4.19), with only what alterego itself serves (its CSP forbids anything else).

use std::process::Command;

use crate::common::TestApp;

/// Runs headless Chromium on `url`; returns the DOM after the page's scripts ran and the
/// browser's log (console messages appear there as `CONSOLE` lines).
fn rendered_dom(url: &str) -> (String, String) {
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
            "--enable-logging=stderr",
            "--v=0",
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
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
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
    let mut log = String::new();
    for _ in 0..3 {
        let url = url.clone();
        let (dom, stderr) = tokio::task::spawn_blocking(move || rendered_dom(&url))
            .await
            .expect("browser task");
        text = visible_text(&dom);
        log = stderr;
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
    // Nothing blocked by the CSP (a request to another host, such as web fonts), no errors.
    let console: Vec<&str> = log.lines().filter(|l| l.contains("CONSOLE")).collect();
    assert!(
        console.iter().any(|l| l.contains("api.json")),
        "the browser log holds no console messages (is --enable-logging honoured?): {log:.2000}"
    );
    assert!(
        console.iter().all(|l| !l.contains("violates")
            && !l.contains("blocked")
            && !l.contains("rror")
            && !l.contains("https://")),
        "console errors on /docs: {console:#?}"
    );
    // Create Message shows its own parameters and body, not look-alikes' names.
    let url = format!("{url}#tag/messages/POST/spaces/{{spaceId}}/channels/{{channelId}}/messages/");
    let mut section = String::new();
    for _ in 0..3 {
        let url = url.clone();
        let (dom, _) = tokio::task::spawn_blocking(move || rendered_dom(&url))
            .await
            .expect("browser task");
        let text = visible_text(&dom);
        if let Some(start) = text.find("Create Message \u{200b} # Copy link") {
            let rest = &text[start..];
            section = rest[..rest.find("Responses").unwrap_or(rest.len())].to_string();
            break;
        }
    }
    {
        assert!(!section.is_empty(), "the Create Message section did not render");
        assert!(section.contains("channelId Type: string Format: uuid"), "{section}");
        assert!(!section.contains("ChannelType"), "{section}");
        assert!(!section.contains("BanCreatePayload"), "{section}");
        assert!(section.contains("Idempotency-Key"), "{section}");
    }
}

/// The reference is compressed when the client accepts it and revalidated with its ETag.
#[tokio::test]
async fn docs_and_api_json_are_compressed_and_cacheable() {
    let app = TestApp::spawn().await;
    for path in ["/docs", "/api.json"] {
        let res = app
            .http
            .get(app.url(path))
            .header("accept-encoding", "gzip")
            .send()
            .await
            .expect("request");
        assert_eq!(res.status(), 200, "{path}");
        assert_eq!(res.headers()["content-encoding"], "gzip", "{path}");
        assert_eq!(res.headers()["cache-control"], "no-cache", "{path}");
        let etag = res.headers()["etag"].to_str().unwrap().to_string();
        let compressed = res.bytes().await.unwrap().len();
        let plain = app
            .http
            .get(app.url(path))
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap()
            .len();
        assert!(
            compressed * 3 < plain,
            "{path}: {compressed} bytes compressed vs {plain}"
        );
        let again = app
            .http
            .get(app.url(path))
            .header("if-none-match", &etag)
            .send()
            .await
            .unwrap();
        assert_eq!(again.status(), 304, "{path}");
        assert_eq!(again.headers()["etag"].to_str().unwrap(), etag);
    }
}

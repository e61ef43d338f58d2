//! `/api.json` passes an independent OpenAPI 3.1 validator (PyPI's openapi-spec-validator, from
//! tests/python/requirements.txt). Mikoto's tooling reads the top-level `websocket` key, which
//! the specification does not allow; the document also carries it as `x-websocket`, so the
//! validated copy drops the former.

use crate::common::TestApp;

#[tokio::test]
async fn api_json_passes_openapi_spec_validator() {
    let app = TestApp::spawn().await;
    let r = app.get("/api.json", None).await;
    r.expect(200, None);
    let mut doc = r.body.clone();
    assert!(doc["x-websocket"].is_object(), "the websocket description is mirrored");
    doc.as_object_mut().expect("document").remove("websocket");
    assert!(!r.text.contains("\"default\":null"), "no null defaults");
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("api.json");
    std::fs::write(&file, serde_json::to_vec(&doc).expect("json")).expect("write");
    let validator = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/python/.venv/bin/openapi-spec-validator"
    );
    assert!(
        std::path::Path::new(validator).exists(),
        "{validator} is missing: run ./scripts/test.sh (it installs tests/python/requirements.txt)"
    );
    let out = tokio::process::Command::new(validator)
        .arg(&file)
        .output()
        .await
        .expect("run openapi-spec-validator");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "openapi-spec-validator refused /api.json:\n{text}"
    );
    assert!(text.contains("OK"), "{text}");
}

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

/// Every request and response example in `/api.json` is valid against its own schema, so a reader who copies
/// one sends something the server accepts.
#[tokio::test]
async fn examples_match_their_schemas() {
    let app = TestApp::spawn().await;
    let doc = app.get("/api.json", None).await.body;
    let mut checked = 0;
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("path item") {
            for media in [
                &op["requestBody"]["content"]["application/json"],
                &op["responses"]["200"]["content"]["application/json"],
            ] {
                if media["example"].is_null() {
                    continue;
                }
                let mut schema = media["schema"].clone();
                schema["components"] = doc["components"].clone();
                let validator = jsonschema::options()
                    .should_validate_formats(true)
                    .build(&schema)
                    .expect("schema compiles");
                let errors: Vec<String> = validator
                    .iter_errors(&media["example"])
                    .map(|e| e.to_string())
                    .collect();
                assert!(errors.is_empty(), "{method} {path}: example invalid: {errors:?}");
                checked += 1;
            }
        }
    }
    assert!(checked >= 35, "only {checked} examples");
}

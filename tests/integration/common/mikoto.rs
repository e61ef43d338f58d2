//! A Mikoto-shaped source database for the importer's tests: its own database, built from
//! `tests/data/mikoto-db-schema.json` (Mikoto's schema as the spec records it: enums, tables,
//! keys, foreign keys, indexes) and dropped when the value is dropped.

use serde_json::Value;
use sqlx::{Connection, Executor, PgConnection, PgPool};

const SCHEMA: &str = include_str!("../../data/mikoto-db-schema.json");

pub struct MikotoDb {
    pub url: String,
    admin_url: String,
    name: String,
}

fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn column_list(v: &Value) -> String {
    v.as_array()
        .expect("columns")
        .iter()
        .map(|c| quote(c.as_str().expect("column")))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The DDL of Mikoto's schema: enum types, tables with their primary and unique keys, then
/// foreign keys and indexes (once every table exists).
fn ddl() -> Vec<String> {
    let schema: Value = serde_json::from_str(SCHEMA).expect("schema json");
    let enums = schema["enums"].as_object().expect("enums");
    let mut out = Vec::new();
    for (name, labels) in enums {
        let labels: Vec<String> = labels
            .as_array()
            .expect("labels")
            .iter()
            .map(|l| format!("'{}'", l.as_str().expect("label")))
            .collect();
        out.push(format!("CREATE TYPE {} AS ENUM ({})", quote(name), labels.join(", ")));
    }
    let tables = schema["tables"].as_object().expect("tables");
    let mut later = Vec::new();
    for (table, t) in tables {
        let mut parts = Vec::new();
        for c in t["columns"].as_array().expect("columns") {
            let ty = c["type"].as_str().expect("type");
            let ty = if enums.contains_key(ty) {
                quote(ty)
            } else {
                ty.to_string()
            };
            let mut col = format!("{} {ty}", quote(c["c"].as_str().expect("name")));
            if c["nullable"] == Value::Bool(false) {
                col.push_str(" NOT NULL");
            }
            if let Some(d) = c["default"].as_str() {
                col.push_str(&format!(" DEFAULT {d}"));
            }
            parts.push(col);
        }
        for k in t["constraints"].as_array().expect("constraints") {
            let name = quote(k["name"].as_str().expect("constraint name"));
            let cols = column_list(&k["columns"]);
            match k["kind"].as_str().expect("kind") {
                "PRIMARY KEY" => parts.push(format!("CONSTRAINT {name} PRIMARY KEY ({cols})")),
                "UNIQUE" => parts.push(format!("CONSTRAINT {name} UNIQUE ({cols})")),
                "FOREIGN KEY" => {
                    let r = &k["references"];
                    later.push(format!(
                        "ALTER TABLE {} ADD CONSTRAINT {name} FOREIGN KEY ({cols}) REFERENCES {} ({}) ON DELETE {}",
                        quote(table),
                        quote(r["table"].as_str().expect("ref table")),
                        column_list(&r["columns"]),
                        k["onDelete"].as_str().unwrap_or("NO ACTION")
                    ));
                }
                other => panic!("constraint kind {other}"),
            }
        }
        out.push(format!("CREATE TABLE {} ({})", quote(table), parts.join(", ")));
        for i in t["indexes"].as_array().expect("indexes") {
            later.push(i.as_str().expect("index").to_string());
        }
    }
    out.extend(later);
    out
}

impl MikotoDb {
    /// A new database holding Mikoto's (empty) schema.
    pub async fn create() -> MikotoDb {
        let admin_url = super::database_url();
        let name = format!("mikoto_src_{}", uuid::Uuid::now_v7().simple());
        let mut admin = PgConnection::connect(&admin_url).await.expect("connect");
        admin
            .execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
            .await
            .expect("create source database");
        let _ = admin.close().await;
        let url = super::with_database(&admin_url, &name);
        let mut conn = PgConnection::connect(&url).await.expect("connect source");
        for statement in ddl() {
            conn.execute(sqlx::AssertSqlSafe(statement.clone()))
                .await
                .unwrap_or_else(|e| panic!("{statement}: {e}"));
        }
        let _ = conn.close().await;
        MikotoDb { url, admin_url, name }
    }

    pub async fn pool(&self) -> PgPool {
        PgPool::connect(&self.url).await.expect("source pool")
    }
}

impl Drop for MikotoDb {
    fn drop(&mut self) {
        let (admin_url, name) = (self.admin_url.clone(), self.name.clone());
        // Drop cannot await: use a runtime of its own, as TestApp does.
        let _ = std::thread::spawn(move || {
            if let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() {
                rt.block_on(async move {
                    if let Ok(mut admin) = PgConnection::connect(&admin_url).await {
                        let drop = format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)");
                        let _ = admin.execute(sqlx::AssertSqlSafe(drop)).await;
                    }
                });
            }
        })
        .join();
    }
}

//! The independent SCIM conformance checker (PyPI `scim2-tester`, pinned in
//! tests/scim/requirements.txt) against the real binary, with the directory in SQLite and
//! in PostgreSQL. It derives its checks from what `/Schemas` declares: create, read,
//! list with `attributes`/`excludedAttributes`, PUT, PATCH add/replace/remove on every
//! attribute, delete, discovery endpoints and error objects.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::process::Command;

use portcullis_testkit::prelude::*;
use portcullis_testkit::{PostgresServer, TempDir};

const TOKEN: &str = "conformance-token-0123456789abcdef";

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

async fn run_checker(database_url: &str, label: &str) {
    let python = workspace().join("tests/scim/.venv/bin/python");
    assert!(
        python.exists(),
        "the SCIM conformance checker is not installed: run scripts/test (it creates tests/scim/.venv)"
    );
    let upstream = EchoUpstream::start().await;
    let p = Portcullis::builder()
        .env("UPSTREAM_URL", upstream.url())
        .env("SCIM__ENABLED", "true")
        .env("SCIM__DATABASE_URL", database_url)
        .env("SCIM__ENDPOINTS__CHECKER__TOKEN", TOKEN)
        .wait_ready()
        .start()
        .await;
    let url = p.url("/v1/scim/v2/checker");
    let out = tokio::task::spawn_blocking(move || {
        Command::new(python)
            .arg(workspace().join("tests/scim/conformance.py"))
            .arg(url)
            .arg("--token")
            .arg(TOKEN)
            .output()
            .expect("python runs")
    })
    .await
    .unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if let Ok(dir) = std::env::var("PORTCULLIS_SCIM_SUMMARIES") {
        let _ = std::fs::write(
            PathBuf::from(dir).join(format!("scim2-tester-{label}.txt")),
            &report,
        );
    }
    eprintln!("{report}");
    assert!(
        out.status.success(),
        "scim2-tester reported failures on {label}:\n{report}\n{}",
        p.logs()
    );
    let summary = report
        .lines()
        .find(|l| l.starts_with("scim2-tester summary"))
        .expect("a summary line");
    assert!(
        !summary.contains("error") && !summary.contains("failure"),
        "{summary}"
    );
}

#[tokio::test]
#[cfg_attr(
    not(feature = "e2e"),
    ignore = "needs scim2-tester (pip): run scripts/test"
)]
async fn scim2_tester_finds_no_failures_with_sqlite() {
    let dir = TempDir::new("scim-conformance");
    let url = format!("sqlite://{}", dir.path().join("directory.db").display());
    run_checker(&url, "sqlite").await;
}

#[tokio::test]
#[cfg_attr(
    not(feature = "e2e"),
    ignore = "needs PostgreSQL, scim2-tester (pip): run scripts/test"
)]
async fn scim2_tester_finds_no_failures_with_postgresql() {
    let pg = PostgresServer::start();
    run_checker(&pg.database("conformance"), "postgresql").await;
}

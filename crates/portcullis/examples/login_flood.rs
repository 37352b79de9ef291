//! Logs in many distinct users through a running Portcullis whose provider is the
//! development provider (`portcullis dev-idp`), each through the full code flow: the
//! redirect, the provider's form, the callback. Used by `bench/` to create live sessions.
//!
//! usage: login_flood <portcullis URL> <users> [concurrency]
//! Prints the first user's `session_token=...` cookie on stdout.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

#[path = "support/login.rs"]
mod login;
use login::log_in;

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: login_flood <portcullis URL> <users> [concurrency]");
        std::process::exit(2);
    }
    let base = Arc::new(args[1].clone());
    let users: usize = args[2].parse().expect("a number of users");
    let concurrency: usize = args.get(3).and_then(|c| c.parse().ok()).unwrap_or(32);
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let first = log_in(&http, &base, "bench-user-0")
        .await
        .expect("first login");
    let next = Arc::new(AtomicUsize::new(1));
    let failed = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let (http, base, next, failed) = (http.clone(), base.clone(), next.clone(), failed.clone());
        workers.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= users {
                    break;
                }
                if let Err(e) = log_in(&http, &base, &format!("bench-user-{i}")).await
                    && failed.fetch_add(1, Ordering::Relaxed) < 5
                {
                    eprintln!("login {i} failed: {e}");
                }
            }
        }));
    }
    for w in workers {
        w.await.expect("worker");
    }
    let failed = failed.load(Ordering::Relaxed);
    eprintln!(
        "logged in {} users in {:.1}s ({failed} failed)",
        users - failed,
        started.elapsed().as_secs_f64()
    );
    if failed > 0 {
        std::process::exit(1);
    }
    println!("{first}");
}

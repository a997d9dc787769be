//! What the end-to-end benches do alike: tell a measurement from a smoke run, and run once per
//! configured store.

use std::future::Future;

use dns_handling_testkit::StoreKind;

/// True under `cargo bench` (which passes `--bench`); under `cargo test --all-targets` the bench
/// is a small smoke run.
pub fn benchmarking() -> bool {
    std::env::args().any(|arg| arg == "--bench")
}

/// Runs `run` for each store named in `STORES` (default `sqlite,postgres`), one after the other,
/// on a two-thread runtime; PostgreSQL databases are made on `BENCH_POSTGRES_URL`'s server when
/// it is set.
pub fn on_each_store<F, R>(mut run: F) -> anyhow::Result<()>
where
    F: FnMut(StoreKind) -> R,
    R: Future<Output = anyhow::Result<()>>,
{
    if let Ok(url) = std::env::var("BENCH_POSTGRES_URL") {
        // The fixtures create their databases on TEST_POSTGRES_URL's server.
        std::env::set_var("TEST_POSTGRES_URL", url);
    }
    let stores = std::env::var("STORES").unwrap_or_else(|_| "sqlite,postgres".into());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    if stores.contains("sqlite") {
        runtime.block_on(run(StoreKind::Sqlite))?;
    }
    if stores.contains("postgres") {
        runtime.block_on(run(StoreKind::Postgres))?;
    }
    Ok(())
}

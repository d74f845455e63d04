//! The closed-loop load driver and the result table.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

/// What a run measured.
#[derive(Debug)]
pub struct Stats {
    /// Successful operations inside the measured window.
    pub ok: u64,
    /// Failed operations inside the measured window, by reason.
    pub errors: BTreeMap<String, u64>,
    /// Latency of successful operations, in microseconds.
    pub latency: Histogram<u64>,
    /// From the start of the measured window until the last worker stopped.
    pub elapsed: Duration,
}

impl Stats {
    /// Successful operations per second.
    pub fn rate(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64()
    }
}

/// A latency histogram in microseconds, 1 µs to 60 s, 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

/// Records an elapsed time in microseconds.
pub fn record(histogram: &mut Histogram<u64>, elapsed: Duration) {
    histogram.saturating_record(elapsed.as_micros().max(1) as u64);
}

/// Runs `op(worker, n)` from `workers` concurrent tasks in a closed loop, each `n` unique,
/// for `warmup` (not counted) and then `measure`. An `Err` is counted under its text.
pub async fn drive<F, Fut>(workers: usize, warmup: Duration, measure: Duration, op: F) -> Stats
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), String>> + Send,
{
    let op = Arc::new(op);
    let counter = Arc::new(AtomicU64::new(0));
    let measure_from = Instant::now() + warmup;
    let end = measure_from + measure;
    let mut tasks = Vec::with_capacity(workers);
    for worker in 0..workers {
        let op = op.clone();
        let counter = counter.clone();
        tasks.push(tokio::spawn(async move {
            let mut latency = histogram();
            let mut ok = 0u64;
            let mut errors = BTreeMap::<String, u64>::new();
            while Instant::now() < end {
                let n = counter.fetch_add(1, Ordering::Relaxed);
                let started = Instant::now();
                let outcome = op(worker, n).await;
                if started < measure_from {
                    continue;
                }
                match outcome {
                    Ok(()) => {
                        record(&mut latency, started.elapsed());
                        ok += 1;
                    }
                    Err(reason) => *errors.entry(reason).or_default() += 1,
                }
            }
            (ok, errors, latency, Instant::now())
        }));
    }
    let mut stats = Stats {
        ok: 0,
        errors: BTreeMap::new(),
        latency: histogram(),
        elapsed: Duration::ZERO,
    };
    for task in tasks {
        let (ok, errors, latency, stopped) = task.await.expect("load worker panicked");
        stats.ok += ok;
        for (reason, count) in errors {
            *stats.errors.entry(reason).or_default() += count;
        }
        stats.latency.add(latency).expect("same histogram bounds");
        stats.elapsed = stats.elapsed.max(stopped.duration_since(measure_from));
    }
    stats
}

fn ms(micros: u64) -> String {
    format!("{:.3} ms", micros as f64 / 1000.0)
}

/// Prints a result table: the rate and the latency percentiles.
pub fn print_table(title: &str, unit: &str, stats: &Stats) {
    println!();
    println!("== {title}");
    println!("  {:<14} {:>14.0} {unit}/s", "throughput", stats.rate());
    println!(
        "  {:<14} {:>14} in {:.2} s",
        "ok",
        stats.ok,
        stats.elapsed.as_secs_f64()
    );
    let errors: u64 = stats.errors.values().sum();
    println!("  {:<14} {:>14}", "errors", errors);
    for (reason, count) in &stats.errors {
        println!("    {reason}: {count}");
    }
    print_latency(&stats.latency);
}

/// Prints p50/p90/p99/max of a histogram in microseconds.
pub fn print_latency(latency: &Histogram<u64>) {
    for (label, quantile) in [("p50", 0.50), ("p90", 0.90), ("p99", 0.99)] {
        println!(
            "  {:<14} {:>14}",
            label,
            ms(latency.value_at_quantile(quantile))
        );
    }
    println!("  {:<14} {:>14}", "max", ms(latency.max()));
}

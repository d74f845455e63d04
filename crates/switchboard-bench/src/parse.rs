//! What a plugin costs per webhook: `verify`, `parse` and `raw_for_storage`, the three calls the
//! server makes for every request, timed on one thread over every fixture of every plugin (the
//! workload's templates, each request made unique). No HTTP and no store: the plugin's share of
//! the CPU a webhook takes, which a whole-server run on a shared machine cannot separate.

use std::time::Instant;

use anyhow::{Context, bail};
use switchboard_core::{ConnectionConfig, Registry, Timestamp, WebhookRequest, WebhookSource};

use crate::workload::{self, Template};

/// One fixture's cost.
#[derive(Debug, Clone)]
pub struct Timing {
    /// The vendor.
    pub vendor: &'static str,
    /// The fixture.
    pub name: String,
    /// Body bytes (of request number 0).
    pub bytes: usize,
    /// Events `parse` returns.
    pub events: usize,
    /// Microseconds per request for the three calls, the best of the rounds.
    pub micros: f64,
}

/// Distinct requests rendered per fixture and cycled through, so that every call reads a body
/// it has not just read (as in a run, where every body is new), without rendering in the loop.
const DISTINCT: u64 = 64;

/// Times `iterations` requests per fixture, `rounds` times, keeping each fixture's best round
/// (the one least disturbed by other work on the machine). Fails if any request does not
/// verify or parse: a timing of refusals would measure nothing.
pub fn time_plugins(
    registry: &Registry,
    templates: &[Template],
    iterations: u64,
    rounds: u32,
) -> anyhow::Result<Vec<Timing>> {
    let connections = workload::connections();
    let mut timings = Vec::with_capacity(templates.len());
    for template in templates {
        let config = connections
            .iter()
            .find(|c| c.vendor == template.vendor)
            .context("a connection per vendor")?;
        let factory = registry
            .get(template.vendor)
            .and_then(|plugin| plugin.webhook)
            .with_context(|| format!("plugin {} takes no webhooks", template.vendor))?;
        let source = factory(config).map_err(|e| anyhow::anyhow!("{}: {e}", template.vendor))?;
        let rendered: Vec<_> = (0..DISTINCT).map(|n| template.render(n)).collect();
        let received_at = Timestamp::now();
        let requests: Vec<WebhookRequest<'_>> = rendered
            .iter()
            .map(|r| WebhookRequest {
                connection: config,
                headers: &r.headers,
                query: &r.query,
                body: r.body.as_bytes(),
                received_at,
            })
            .collect();
        let events = run(source.as_ref(), config, &requests[..1], 1, template)?;
        let mut best = f64::INFINITY;
        for _ in 0..rounds.max(1) {
            let started = Instant::now();
            run(source.as_ref(), config, &requests, iterations, template)?;
            best = best.min(started.elapsed().as_secs_f64() * 1e6 / iterations.max(1) as f64);
        }
        timings.push(Timing {
            vendor: template.vendor,
            name: template.name.clone(),
            bytes: rendered[0].body.len(),
            events,
            micros: best,
        });
    }
    Ok(timings)
}

/// Makes `iterations` requests, cycling through `requests`; the events of the last one.
fn run(
    source: &dyn WebhookSource,
    config: &ConnectionConfig,
    requests: &[WebhookRequest<'_>],
    iterations: u64,
    template: &Template,
) -> anyhow::Result<usize> {
    let mut events = 0;
    for request in requests.iter().cycle().take(iterations as usize) {
        let failed = |call: &str, message: &str| {
            anyhow::anyhow!(
                "{}/{} ({}): {call} failed: {message}",
                template.vendor,
                template.name,
                config.id
            )
        };
        source
            .verify(request)
            .map_err(|e| failed("verify", &e.message))?;
        let parsed = source
            .parse(request)
            .map_err(|e| failed("parse", &e.message))?;
        if parsed.is_empty() {
            bail!(
                "{}/{}: parse returned no events",
                template.vendor,
                template.name
            );
        }
        events = parsed.len();
        let raw = source.raw_for_storage(request);
        std::hint::black_box((parsed, raw));
    }
    Ok(events)
}

/// The `parse` scenario: prints each fixture's cost and each vendor's mean.
pub fn parse(iterations: u64, rounds: u32) -> anyhow::Result<()> {
    let registry = switchboard_plugins::registry()?;
    let templates = workload::templates(&registry)?;
    println!(
        "== plugins: verify + parse + raw_for_storage on one thread, {iterations} requests per fixture, best of {rounds} rounds"
    );
    let timings = time_plugins(&registry, &templates, iterations, rounds)?;
    println!(
        "  {:<10} {:<44} {:>7} {:>7} {:>11}",
        "vendor", "fixture", "bytes", "events", "us/request"
    );
    for t in &timings {
        println!(
            "  {:<10} {:<44} {:>7} {:>7} {:>11.2}",
            t.vendor, t.name, t.bytes, t.events, t.micros
        );
    }
    println!();
    for &vendor in workload::vendors() {
        let mine: Vec<&Timing> = timings.iter().filter(|t| t.vendor == vendor).collect();
        if mine.is_empty() {
            continue;
        }
        let mean = mine.iter().map(|t| t.micros).sum::<f64>() / mine.len() as f64;
        println!(
            "  {vendor:<10} mean {mean:>8.2} us/request over {} fixtures",
            mine.len()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_fixture_of_every_vendor_is_timed_on_requests_that_verify_and_parse() {
        let registry = switchboard_plugins::registry().unwrap();
        let templates = workload::templates(&registry).unwrap();
        let timings = time_plugins(&registry, &templates, 3, 1).unwrap();
        assert_eq!(timings.len(), templates.len());
        for vendor in workload::vendors() {
            assert!(timings.iter().any(|t| t.vendor == *vendor), "{vendor}");
        }
        for (timing, template) in timings.iter().zip(&templates) {
            assert_eq!(timing.name, template.name);
            assert_eq!(timing.events, template.events.len(), "{}", timing.name);
            assert!(timing.micros > 0.0 && timing.micros.is_finite());
        }
    }

    #[test]
    fn a_request_that_does_not_verify_stops_the_timing() {
        let registry = switchboard_plugins::registry().unwrap();
        let mut templates = workload::templates(&registry).unwrap();
        // Without its headers (a signature, a token) a fixture no longer verifies, or the
        // vendor reads its credential from the query or the body: keep one that fails.
        for template in &mut templates {
            template.headers.clear();
        }
        let failing = templates
            .into_iter()
            .find(|t| time_plugins(&registry, std::slice::from_ref(t), 1, 1).is_err());
        let failing = failing.expect("some fixture carries its credential in a header");
        let error = time_plugins(&registry, &[failing], 1, 1).unwrap_err();
        assert!(error.to_string().contains("verify failed"), "{error}");
    }
}

//! `switchboard sync`: runs a connection's pull sync on the server and shows its progress.

use std::io::IsTerminal;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use indicatif::{ProgressBar, ProgressStyle};
use switchboard_core::Timestamp;
use switchboard_proto::convert;
use switchboard_proto::v1;
use tonic::Streaming;

/// Parses `--since`: an RFC 3339 time (`2024-05-01T00:00:00Z`) or a date (`2024-05-01`,
/// midnight UTC).
pub fn parse_since(text: &str) -> Result<Timestamp, String> {
    let text = text.trim();
    let parsed = Timestamp::parse_rfc3339(text)
        .or_else(|| Timestamp::parse_rfc3339(&format!("{text}T00:00:00Z")));
    match parsed {
        Some(at) if at <= Timestamp::now() => Ok(at),
        Some(_) => Err(format!("{text} is in the future; give a time in the past")),
        None => Err(format!(
            "{text:?} is not a time; use RFC 3339 (2024-05-01T00:00:00Z) or a date (2024-05-01)"
        )),
    }
}

/// The request for `switchboard sync`.
pub fn request(
    connection: String,
    since: Option<Timestamp>,
    from_scratch: bool,
    max_pages: u32,
) -> v1::SyncConnectionRequest {
    v1::SyncConnectionRequest {
        connection_id: connection,
        since: since.map(convert::timestamp),
        from_scratch,
        max_pages,
    }
}

fn line(progress: &v1::SyncProgress) -> String {
    format!(
        "{} pages · {} records ({} new) · {:.0} records/s",
        progress.pages, progress.records, progress.appended, progress.records_per_second
    )
}

/// Follows the progress stream to its end, drawing a progress bar on a terminal (plain lines
/// otherwise). Ctrl-C cancels the call: the server stops after the page in flight, and the next
/// run resumes from the saved cursor.
pub async fn follow(connection: &str, mut stream: Streaming<v1::SyncProgress>) -> Result<()> {
    let terminal = std::io::stderr().is_terminal();
    let bar = if terminal {
        let bar = ProgressBar::new_spinner();
        bar.set_style(
            ProgressStyle::with_template("{spinner} {prefix} {msg} [{elapsed}]")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        bar.set_prefix(format!("syncing {connection}:"));
        bar.enable_steady_tick(Duration::from_millis(120));
        bar
    } else {
        ProgressBar::hidden()
    };
    let mut last: Option<v1::SyncProgress> = None;
    loop {
        let next = tokio::select! {
            next = stream.message() => next,
            _ = tokio::signal::ctrl_c() => {
                bar.abandon_with_message("interrupted");
                bail!(
                    "sync of {connection} interrupted after {}; run the same command again to resume from the saved cursor",
                    last.as_ref().map_or_else(|| "no pages".to_owned(), line)
                );
            }
        };
        match next {
            Ok(Some(progress)) => {
                if terminal {
                    bar.set_message(line(&progress));
                } else {
                    eprintln!("{connection}: {}", line(&progress));
                }
                last = Some(progress);
            }
            Ok(None) => break,
            Err(status) => {
                bar.abandon();
                let done = last.as_ref().map_or_else(|| "no pages".to_owned(), line);
                return Err(anyhow::anyhow!("{}", status.message())).with_context(|| {
                    format!(
                        "sync of {connection} failed ({:?}) after {done}; pages already saved are kept, and running it again resumes from there",
                        status.code()
                    )
                });
            }
        }
    }
    bar.finish_and_clear();
    match last {
        Some(progress) => {
            let state = if progress.done {
                "up to date"
            } else {
                "stopped early (more to pull: run again to continue)"
            };
            println!("{connection}: {}; {state}", line(&progress));
        }
        None => println!("{connection}: nothing to pull"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_rfc3339_and_dates() {
        assert_eq!(
            parse_since("2024-05-01"),
            Ok(Timestamp::parse_rfc3339("2024-05-01T00:00:00Z").expect("valid"))
        );
        assert!(parse_since("2024-05-01T10:00:00+02:00").is_ok());
        assert!(parse_since("yesterday").is_err());
        assert!(parse_since("9999-01-01").is_err());
    }
}

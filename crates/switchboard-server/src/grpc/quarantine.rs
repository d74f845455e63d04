//! `ListQuarantine` and `RetryQuarantine`: thin adapters over [`crate::app::quarantine`].

use switchboard_proto::convert;
use switchboard_proto::v1;
use tonic::{Request, Response, Status};

use super::SwitchboardService;
use super::fields::{connection_ids, invalid, page_size, status};

fn wire(entry: switchboard_store::Quarantined) -> v1::QuarantinedWebhook {
    v1::QuarantinedWebhook {
        id: entry.id,
        connection_id: entry.connection.to_string(),
        vendor: entry.vendor,
        received_at: Some(convert::timestamp(entry.received_at)),
        request_id: entry.request_id,
        reason: entry.reason,
        attempts: entry.attempts,
        last_attempt_at: entry.last_attempt_at.map(convert::timestamp),
        body: entry.body,
    }
}

impl SwitchboardService {
    pub(super) async fn list_quarantine_rpc(
        &self,
        request: Request<v1::ListQuarantineRequest>,
    ) -> Result<Response<v1::ListQuarantineResponse>, Status> {
        let r = request.into_inner();
        let connections = connection_ids(&r.connection_ids, "connection_ids")?;
        let limit = page_size(r.page_size)?;
        let after = if r.page_token.is_empty() {
            0
        } else {
            r.page_token.parse::<u64>().map_err(|_| {
                invalid("page_token is not one this server gave; start again without it")
            })?
        };
        let quarantine = &self.app.quarantine;
        let (entries, next) = quarantine
            .list(after, limit, &connections)
            .await
            .map_err(|e| status(&e))?;
        let totals = quarantine.totals().await.map_err(|e| status(&e))?;
        Ok(Response::new(v1::ListQuarantineResponse {
            webhooks: entries.into_iter().map(wire).collect(),
            next_page_token: next.map(|id| id.to_string()).unwrap_or_default(),
            total_entries: totals.entries,
            total_bytes: totals.bytes,
        }))
    }

    pub(super) async fn retry_quarantine_rpc(
        &self,
        request: Request<v1::RetryQuarantineRequest>,
    ) -> Result<Response<v1::RetryQuarantineResponse>, Status> {
        let r = request.into_inner();
        if r.ids.is_empty() != r.all {
            return Err(invalid(
                "name the entries to retry in ids, or set all = true (not both)",
            ));
        }
        let summary = self
            .app
            .quarantine
            .retry(&r.ids)
            .await
            .map_err(|e| status(&e))?;
        Ok(Response::new(v1::RetryQuarantineResponse {
            released: summary.released,
            appended: summary.appended as u64,
            duplicates: summary.duplicates as u64,
            still_failing: summary
                .still_failing
                .into_iter()
                .map(|(id, reason)| v1::QuarantineFailure { id, reason })
                .collect(),
            not_found: summary.not_found,
        }))
    }
}

-- _ADD
INSERT INTO conversion_events (event_id, event_name, event_time, contact_id, channel, identity, ctwa_clid, value, currency, custom_data)
VALUES (:event_id, :event_name, :event_time, :contact_id, :channel, :identity, :ctwa_clid, :value, :currency, CAST(:custom_data AS jsonb))
ON CONFLICT (event_id) DO NOTHING
RETURNING id;

-- _BY_STATUS
SELECT status, count(*) FROM conversion_events GROUP BY status;

-- _OLDEST_PENDING
SELECT event_id, event_time, now() - event_time AS age FROM conversion_events
WHERE status = 'pending' ORDER BY event_time, id LIMIT 1;

-- _SENDERS
SELECT parked_reason, parked_code, parked_at, last_request_at, last_success_at FROM conversion_sender WHERE id = 1;

-- _EVENTS
SELECT event_id, event_name, event_time, contact_id, status, attempts, sent_at, sent_ctwa_clid, fbtrace_id, error_code, error_subcode, last_error, value, currency FROM conversion_events
WHERE cardinality(CAST(:statuses AS text[])) = 0 OR status = ANY(:statuses)
ORDER BY event_time DESC, id DESC
LIMIT :limit;

-- _RETRY
UPDATE conversion_events
SET status = 'pending', next_attempt_at = now(), claimed_at = NULL, error_code = NULL,
    error_subcode = NULL, last_error = NULL
WHERE status = :status AND status IN ('failed', 'unconfirmed', 'unattributed')
  AND (cardinality(CAST(:event_ids AS text[])) = 0 OR event_id = ANY(:event_ids));

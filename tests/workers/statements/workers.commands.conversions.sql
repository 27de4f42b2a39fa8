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

-- _APPS
SELECT app.app_id, named.name, counted.events, state.parked_reason, state.parked_code, state.parked_at,
       state.last_request_at, state.last_success_at
FROM (
    SELECT click_app_id AS app_id FROM conversion_events WHERE click_app_id IS NOT NULL
    UNION SELECT app_id FROM conversion_app_state
) AS app
LEFT JOIN apps AS named USING (app_id)
LEFT JOIN conversion_app_state AS state USING (app_id)
LEFT JOIN LATERAL (
    SELECT jsonb_object_agg(status, events) AS events FROM (
        SELECT status, count(*) AS events FROM conversion_events
        WHERE click_app_id = app.app_id GROUP BY status
    ) AS per_status
) AS counted ON true
ORDER BY app.app_id;

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

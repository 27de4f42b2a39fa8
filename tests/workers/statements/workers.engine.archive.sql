-- _INSERT
INSERT INTO callbacks (key, trigger, app_id, project_id, event_time, accepted_time, received_at, signature_verified, contact_ids, identity, payload)
SELECT key, trigger, app_id, project_id, event_time, accepted_time, received_at, signature_verified, contact_ids, identity, payload::jsonb
FROM ROWS FROM (
    json_to_recordset(CAST(:archived AS json)) AS (key text, trigger text, app_id text, project_id text, event_time timestamptz, accepted_time timestamptz, received_at timestamptz, signature_verified boolean, contact_ids text[], identity text),
    unnest(CAST(:payloads AS text[]))
) AS batch(key, trigger, app_id, project_id, event_time, accepted_time, received_at, signature_verified, contact_ids, identity, payload)
ON CONFLICT (key) DO NOTHING
RETURNING key;

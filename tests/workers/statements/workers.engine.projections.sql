-- _WRITE
WITH contacts_written AS (
    WITH seen AS (
        SELECT contact_id, min(at) AS first_seen_at, max(at) AS last_seen_at
        FROM json_to_recordset(CAST(:sighting_rows AS json)) AS sighting_rows(contact_id text, at timestamptz)
        GROUP BY contact_id
    ), named AS (
        SELECT DISTINCT ON (contact_id) contact_id, name, at, key
        FROM json_to_recordset(CAST(:naming_rows AS json)) AS naming_rows(contact_id text, name text, at timestamptz, key text)
        ORDER BY contact_id, at DESC, key DESC
    )
    INSERT INTO contacts
        (contact_id, first_seen_at, last_seen_at, display_name, display_name_at, display_name_key)
    SELECT seen.contact_id, seen.first_seen_at, seen.last_seen_at, named.name, named.at, named.key
    FROM seen LEFT JOIN named USING (contact_id)
    ON CONFLICT (contact_id) DO UPDATE SET
        first_seen_at = LEAST(contacts.first_seen_at, EXCLUDED.first_seen_at),
        last_seen_at = GREATEST(contacts.last_seen_at, EXCLUDED.last_seen_at),
        display_name = CASE WHEN (contacts.display_name_at IS NULL OR (EXCLUDED.display_name_at IS NOT NULL AND (EXCLUDED.display_name_at, EXCLUDED.display_name_key) > (contacts.display_name_at, contacts.display_name_key))) THEN EXCLUDED.display_name ELSE contacts.display_name END,
display_name_at = CASE WHEN (contacts.display_name_at IS NULL OR (EXCLUDED.display_name_at IS NOT NULL AND (EXCLUDED.display_name_at, EXCLUDED.display_name_key) > (contacts.display_name_at, contacts.display_name_key))) THEN EXCLUDED.display_name_at ELSE contacts.display_name_at END,
display_name_key = CASE WHEN (contacts.display_name_at IS NULL OR (EXCLUDED.display_name_at IS NOT NULL AND (EXCLUDED.display_name_at, EXCLUDED.display_name_key) > (contacts.display_name_at, contacts.display_name_key))) THEN EXCLUDED.display_name_key ELSE contacts.display_name_key END
    ), identities_written AS (
    WITH seen AS (
        SELECT * FROM json_to_recordset(CAST(:identity_rows AS json)) AS identity_rows(channel text, identity text, app_id text, contact_id text, at timestamptz, key text)
    ), times AS (
        SELECT channel, identity, app_id, min(at) AS first_seen_at, max(at) AS last_seen_at
        FROM seen GROUP BY channel, identity, app_id
    ), owner AS (
        SELECT DISTINCT ON (channel, identity, app_id) channel, identity, app_id, contact_id, at, key
        FROM seen WHERE contact_id IS NOT NULL
        ORDER BY channel, identity, app_id, at DESC, key DESC
    )
    INSERT INTO channel_identities
        (channel, identity, app_id, contact_id, first_seen_at, last_seen_at, contact_at, contact_key)
    SELECT times.channel, times.identity, NULLIF(times.app_id, ''), owner.contact_id,
           times.first_seen_at, times.last_seen_at, owner.at, owner.key
    FROM times LEFT JOIN owner USING (channel, identity, app_id)
    ON CONFLICT (channel, identity, app_id) DO UPDATE SET
        first_seen_at = LEAST(channel_identities.first_seen_at, EXCLUDED.first_seen_at),
        last_seen_at = GREATEST(channel_identities.last_seen_at, EXCLUDED.last_seen_at),
        contact_id = CASE WHEN (channel_identities.contact_at IS NULL OR (EXCLUDED.contact_at IS NOT NULL AND (EXCLUDED.contact_at, EXCLUDED.contact_key) > (channel_identities.contact_at, channel_identities.contact_key))) THEN EXCLUDED.contact_id ELSE channel_identities.contact_id END,
contact_at = CASE WHEN (channel_identities.contact_at IS NULL OR (EXCLUDED.contact_at IS NOT NULL AND (EXCLUDED.contact_at, EXCLUDED.contact_key) > (channel_identities.contact_at, channel_identities.contact_key))) THEN EXCLUDED.contact_at ELSE channel_identities.contact_at END,
contact_key = CASE WHEN (channel_identities.contact_at IS NULL OR (EXCLUDED.contact_at IS NOT NULL AND (EXCLUDED.contact_at, EXCLUDED.contact_key) > (channel_identities.contact_at, channel_identities.contact_key))) THEN EXCLUDED.contact_key ELSE channel_identities.contact_key END
    ), conversations_written AS (
    WITH event AS (
        SELECT * FROM json_to_recordset(CAST(:conversation_rows AS json)) AS conversation_rows(conversation_id text, contact_id text, app_id text, kind text, channel text, at timestamptz, key text)
    ), summary AS (
        SELECT conversation_id, min(contact_id) AS contact_id, min(app_id) AS app_id,
               min(at) FILTER (WHERE kind IN ('start', 'activity')) AS started_at,
               max(at) FILTER (WHERE kind <> 'delete') AS last_activity_at,
               max(at) FILTER (WHERE kind = 'stop') AS stopped_at,
               max(at) FILTER (WHERE kind = 'delete') AS deleted_at
        FROM event GROUP BY conversation_id
    ), channel AS (
        SELECT DISTINCT ON (conversation_id) conversation_id, channel, at, key
        FROM event WHERE channel IS NOT NULL
        ORDER BY conversation_id, at DESC, key DESC
    )
    INSERT INTO conversations (
        conversation_id, contact_id, app_id, started_at, last_activity_at, stopped_at, deleted_at,
        active_channel, active_channel_at, active_channel_key
    )
    SELECT summary.*, channel.channel, channel.at, channel.key
    FROM summary LEFT JOIN channel USING (conversation_id)
    ON CONFLICT (conversation_id) DO UPDATE SET
        contact_id = LEAST(conversations.contact_id, EXCLUDED.contact_id),
        app_id = LEAST(conversations.app_id, EXCLUDED.app_id),
        started_at = LEAST(conversations.started_at, EXCLUDED.started_at),
        last_activity_at = GREATEST(conversations.last_activity_at, EXCLUDED.last_activity_at),
        stopped_at = GREATEST(conversations.stopped_at, EXCLUDED.stopped_at),
        deleted_at = GREATEST(conversations.deleted_at, EXCLUDED.deleted_at),
        active_channel = CASE WHEN (conversations.active_channel_at IS NULL OR (EXCLUDED.active_channel_at IS NOT NULL AND (EXCLUDED.active_channel_at, EXCLUDED.active_channel_key) > (conversations.active_channel_at, conversations.active_channel_key))) THEN EXCLUDED.active_channel ELSE conversations.active_channel END,
active_channel_at = CASE WHEN (conversations.active_channel_at IS NULL OR (EXCLUDED.active_channel_at IS NOT NULL AND (EXCLUDED.active_channel_at, EXCLUDED.active_channel_key) > (conversations.active_channel_at, conversations.active_channel_key))) THEN EXCLUDED.active_channel_at ELSE conversations.active_channel_at END,
active_channel_key = CASE WHEN (conversations.active_channel_at IS NULL OR (EXCLUDED.active_channel_at IS NOT NULL AND (EXCLUDED.active_channel_at, EXCLUDED.active_channel_key) > (conversations.active_channel_at, conversations.active_channel_key))) THEN EXCLUDED.active_channel_key ELSE conversations.active_channel_key END
    ), messages_written AS (INSERT INTO messages (message_id, app_id, contact_id, conversation_id, channel, identity, kind, text, media_url, sent_at, has_referral, processing_mode) SELECT message_id, app_id, contact_id, conversation_id, channel, identity, kind, text, media_url, sent_at, has_referral, processing_mode FROM json_to_recordset(CAST(:message_rows AS json)) AS message_rows(message_id text, app_id text, contact_id text, conversation_id text, channel text, identity text, kind text, text text, media_url text, sent_at timestamptz, has_referral boolean, processing_mode text) ON CONFLICT (message_id) DO NOTHING RETURNING message_id), deliveries_written AS (INSERT INTO delivery_reports (message_id, status, app_id, channel, identity, contact_id, conversation_id, reason_code, reported_at, processing_mode) SELECT message_id, status, app_id, channel, identity, contact_id, conversation_id, reason_code, reported_at, processing_mode FROM json_to_recordset(CAST(:delivery_rows AS json)) AS delivery_rows(message_id text, status text, app_id text, channel text, identity text, contact_id text, conversation_id text, reason_code text, reported_at timestamptz, processing_mode text) ON CONFLICT (message_id, status) DO NOTHING RETURNING message_id), clicks_written AS (INSERT INTO ad_clicks (ctwa_clid, source_id, source_type, source_url, headline, body, media_type, image_url, video_url, thumbnail_url, welcome_text, referral, message_id, app_id, channel, identity, contact_id, conversation_id, clicked_at) SELECT ctwa_clid, source_id, source_type, source_url, headline, body, media_type, image_url, video_url, thumbnail_url, welcome_text, referral, message_id, app_id, channel, identity, contact_id, conversation_id, clicked_at FROM json_to_recordset(CAST(:click_rows AS json)) AS click_rows(ctwa_clid text, source_id text, source_type text, source_url text, headline text, body text, media_type text, image_url text, video_url text, thumbnail_url text, welcome_text text, referral jsonb, message_id text, app_id text, channel text, identity text, contact_id text, conversation_id text, clicked_at timestamptz) ON CONFLICT (message_id) DO NOTHING RETURNING message_id) SELECT 'click', message_id FROM clicks_written UNION ALL SELECT 'message', message_id FROM messages_written UNION ALL SELECT DISTINCT 'report', message_id FROM deliveries_written;

-- _RECORD_DELETIONS
INSERT INTO contacts (contact_id, deleted_at)
SELECT contact_id, min(deleted_at) FROM json_to_recordset(CAST(:deletion_rows AS json)) AS deletion_rows(contact_id text, deleted_at timestamptz) GROUP BY contact_id
ON CONFLICT (contact_id) DO UPDATE SET deleted_at = LEAST(contacts.deleted_at, EXCLUDED.deleted_at);

-- _ERASED_ROOTS
WITH RECURSIVE 
    members(root, member, depth) AS (
        SELECT root, root, 0 FROM unnest(CAST(:roots AS text[])) AS root
        UNION
        SELECT members.root, merges.deleted_contact_id, members.depth + 1
        FROM members JOIN contact_merges AS merges ON merges.preserved_contact_id = members.member
        WHERE members.depth < 64
    )

SELECT DISTINCT members.root
FROM members JOIN contacts ON contacts.contact_id = members.member
WHERE contacts.deleted_at IS NOT NULL;

-- _IDENTITIES_OF
SELECT DISTINCT channel, identity, contact_id FROM (
    SELECT channel, identity, contact_id FROM channel_identities WHERE contact_id = ANY(:roots)
    UNION ALL SELECT channel, identity, contact_id FROM messages WHERE contact_id = ANY(:roots)
    UNION ALL SELECT channel, identity, contact_id FROM ad_clicks WHERE contact_id = ANY(:roots)
    UNION ALL SELECT channel, identity, contact_id FROM delivery_reports WHERE contact_id = ANY(:roots)
) AS seen
WHERE channel IS NOT NULL AND identity IS NOT NULL AND identity NOT LIKE 'erased:%'
ORDER BY channel, identity, contact_id;

-- _ERASE_ROWS[0]
UPDATE messages SET identity = erased.opaque, text = NULL, media_url = NULL
FROM unnest(CAST(:channels AS text[]), CAST(:identities AS text[]), CAST(:opaques AS text[])) AS erased(channel, identity, opaque)
WHERE messages.channel = erased.channel AND messages.identity = erased.identity;

-- _ERASE_ROWS[1]
UPDATE ad_clicks SET identity = erased.opaque
FROM unnest(CAST(:channels AS text[]), CAST(:identities AS text[]), CAST(:opaques AS text[])) AS erased(channel, identity, opaque)
WHERE ad_clicks.channel = erased.channel AND ad_clicks.identity = erased.identity;

-- _ERASE_ROWS[2]
UPDATE delivery_reports SET identity = erased.opaque
FROM unnest(CAST(:channels AS text[]), CAST(:identities AS text[]), CAST(:opaques AS text[])) AS erased(channel, identity, opaque)
WHERE delivery_reports.channel = erased.channel AND delivery_reports.identity = erased.identity;

-- _ERASE_ROWS[3]
UPDATE contacts SET display_name = NULL WHERE contact_id = ANY(:members);

-- _ERASE_ROWS[4]
UPDATE messages SET text = NULL, media_url = NULL WHERE contact_id = ANY(:members);

-- _ERASE_ROWS[5]
WITH erased AS (
            DELETE FROM channel_identities AS row
            USING unnest(CAST(:channels AS text[]), CAST(:identities AS text[]), CAST(:opaques AS text[])) AS erased(channel, identity, opaque)
            WHERE row.channel = erased.channel AND row.identity = erased.identity
            RETURNING row.*, erased.opaque
        )
        INSERT INTO channel_identities
            (channel, identity, app_id, contact_id, first_seen_at, last_seen_at, contact_at, contact_key)
        SELECT DISTINCT ON (channel, opaque, app_id)
            channel, opaque, app_id, contact_id,
            min(first_seen_at) OVER same, max(last_seen_at) OVER same, contact_at, contact_key
        FROM erased
        WINDOW same AS (PARTITION BY channel, opaque, app_id)
        ORDER BY channel, opaque, app_id, contact_at DESC NULLS LAST, contact_key DESC NULLS LAST
        ON CONFLICT (channel, identity, app_id) DO UPDATE SET
            first_seen_at = LEAST(channel_identities.first_seen_at, EXCLUDED.first_seen_at),
            last_seen_at = GREATEST(channel_identities.last_seen_at, EXCLUDED.last_seen_at),
            contact_id = CASE WHEN (channel_identities.contact_at IS NULL OR (EXCLUDED.contact_at IS NOT NULL AND (EXCLUDED.contact_at, EXCLUDED.contact_key) > (channel_identities.contact_at, channel_identities.contact_key))) THEN EXCLUDED.contact_id ELSE channel_identities.contact_id END,
contact_at = CASE WHEN (channel_identities.contact_at IS NULL OR (EXCLUDED.contact_at IS NOT NULL AND (EXCLUDED.contact_at, EXCLUDED.contact_key) > (channel_identities.contact_at, channel_identities.contact_key))) THEN EXCLUDED.contact_at ELSE channel_identities.contact_at END,
contact_key = CASE WHEN (channel_identities.contact_at IS NULL OR (EXCLUDED.contact_at IS NOT NULL AND (EXCLUDED.contact_at, EXCLUDED.contact_key) > (channel_identities.contact_at, channel_identities.contact_key))) THEN EXCLUDED.contact_key ELSE channel_identities.contact_key END;

-- _CONVERSIONS_OF
SELECT DISTINCT ON (id) id, opaque FROM (
    SELECT event.id, erased.opaque, 0 AS rank
    FROM conversion_events AS event JOIN unnest(CAST(:channels AS text[]), CAST(:identities AS text[]), CAST(:opaques AS text[])) AS erased(channel, identity, opaque)
    ON event.channel = erased.channel AND event.identity = erased.identity
    UNION ALL
    SELECT event.id, 'erased:' || merged.root, 1
    FROM conversion_events AS event
    JOIN unnest(CAST(:members AS text[]), CAST(:member_roots AS text[])) AS merged(member, root)
    ON event.contact_id = merged.member
) AS found
ORDER BY id, rank;

-- _ERASE_CONVERSIONS
UPDATE conversion_events AS event SET
    custom_data = NULL,
    identity = CASE WHEN event.identity IS NULL OR event.identity LIKE 'erased:%' THEN event.identity
                    ELSE erased.opaque END,
    status = CASE WHEN status IN ('pending', 'unattributed', 'unconfigured') THEN 'erased' ELSE status END,
    last_error = CASE WHEN status IN ('pending', 'unattributed', 'unconfigured') THEN 'the person was deleted' ELSE last_error END
FROM unnest(CAST(:ids AS bigint[]), CAST(:opaques AS text[])) AS erased(id, opaque)
WHERE event.id = erased.id;

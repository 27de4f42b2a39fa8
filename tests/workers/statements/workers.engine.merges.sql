-- _RECORD
INSERT INTO contact_merges AS merges (deleted_contact_id, preserved_contact_id, merged_at, merge_key)
SELECT DISTINCT ON (deleted_contact_id) deleted_contact_id, preserved_contact_id, merged_at, merge_key
FROM json_to_recordset(CAST(:merge_rows AS json)) AS merge_rows(deleted_contact_id text, preserved_contact_id text, merged_at timestamptz, merge_key text)
ORDER BY deleted_contact_id, merged_at DESC, merge_key DESC
ON CONFLICT (deleted_contact_id) DO UPDATE SET
    preserved_contact_id = CASE WHEN (EXCLUDED.merged_at, EXCLUDED.merge_key) > (merges.merged_at, merges.merge_key)
        THEN EXCLUDED.preserved_contact_id ELSE merges.preserved_contact_id END,
    merge_key = GREATEST(merges.merge_key, EXCLUDED.merge_key),
    merged_at = GREATEST(merges.merged_at, EXCLUDED.merged_at);

-- _RESOLVE
WITH RECURSIVE chain(start, current, depth) AS (
    SELECT id, id, 0 FROM unnest(CAST(:ids AS text[])) AS id
    UNION ALL
    SELECT chain.start, merges.preserved_contact_id, chain.depth + 1
    FROM chain JOIN contact_merges AS merges ON merges.deleted_contact_id = chain.current
    WHERE chain.depth < 64
)
SELECT DISTINCT ON (start) start, current FROM chain ORDER BY start, depth DESC;

-- _MEMBERS
WITH RECURSIVE 
    members(root, member, depth) AS (
        SELECT root, root, 0 FROM unnest(CAST(:roots AS text[])) AS root
        UNION
        SELECT members.root, merges.deleted_contact_id, members.depth + 1
        FROM members JOIN contact_merges AS merges ON merges.preserved_contact_id = members.member
        WHERE members.depth < 64
    )

SELECT DISTINCT member, root FROM members ORDER BY member, root;

-- _REKEY[0]
UPDATE channel_identities SET contact_id = merged.root FROM unnest(CAST(:members AS text[]), CAST(:roots AS text[])) AS merged(member, root) WHERE channel_identities.contact_id = merged.member;

-- _REKEY[1]
UPDATE conversations SET contact_id = merged.root FROM unnest(CAST(:members AS text[]), CAST(:roots AS text[])) AS merged(member, root) WHERE conversations.contact_id = merged.member;

-- _REKEY[2]
UPDATE messages SET contact_id = merged.root FROM unnest(CAST(:members AS text[]), CAST(:roots AS text[])) AS merged(member, root) WHERE messages.contact_id = merged.member;

-- _REKEY[3]
UPDATE ad_clicks SET contact_id = merged.root FROM unnest(CAST(:members AS text[]), CAST(:roots AS text[])) AS merged(member, root) WHERE ad_clicks.contact_id = merged.member;

-- _REKEY[4]
UPDATE delivery_reports SET contact_id = merged.root FROM unnest(CAST(:members AS text[]), CAST(:roots AS text[])) AS merged(member, root) WHERE delivery_reports.contact_id = merged.member;

-- _REKEY[5]
WITH folded AS (
            SELECT DISTINCT ON (merged.root)
                merged.root AS contact_id,
                min(member.first_seen_at) OVER same AS first_seen_at,
                max(member.last_seen_at) OVER same AS last_seen_at,
                member.display_name, member.display_name_at, member.display_name_key
            FROM contacts AS member JOIN unnest(CAST(:members AS text[]), CAST(:roots AS text[])) AS merged(member, root) ON member.contact_id = merged.member
            WINDOW same AS (PARTITION BY merged.root)
            ORDER BY merged.root, member.display_name_at DESC NULLS LAST, member.display_name_key DESC NULLS LAST
        )
        INSERT INTO contacts
            (contact_id, first_seen_at, last_seen_at, display_name, display_name_at, display_name_key)
        SELECT * FROM folded
        ON CONFLICT (contact_id) DO UPDATE SET
            first_seen_at = LEAST(contacts.first_seen_at, EXCLUDED.first_seen_at),
            last_seen_at = GREATEST(contacts.last_seen_at, EXCLUDED.last_seen_at),
            display_name = CASE WHEN (contacts.display_name_at IS NULL OR (EXCLUDED.display_name_at IS NOT NULL AND (EXCLUDED.display_name_at, EXCLUDED.display_name_key) > (contacts.display_name_at, contacts.display_name_key))) THEN EXCLUDED.display_name ELSE contacts.display_name END,
display_name_at = CASE WHEN (contacts.display_name_at IS NULL OR (EXCLUDED.display_name_at IS NOT NULL AND (EXCLUDED.display_name_at, EXCLUDED.display_name_key) > (contacts.display_name_at, contacts.display_name_key))) THEN EXCLUDED.display_name_at ELSE contacts.display_name_at END,
display_name_key = CASE WHEN (contacts.display_name_at IS NULL OR (EXCLUDED.display_name_at IS NOT NULL AND (EXCLUDED.display_name_at, EXCLUDED.display_name_key) > (contacts.display_name_at, contacts.display_name_key))) THEN EXCLUDED.display_name_key ELSE contacts.display_name_key END;

-- _REKEY[6]
INSERT INTO contacts (contact_id, merged_into_contact_id, merged_at)
SELECT merged.member, merged.root, merges.merged_at
FROM unnest(CAST(:members AS text[]), CAST(:roots AS text[])) AS merged(member, root) JOIN contact_merges AS merges ON merges.deleted_contact_id = merged.member
ON CONFLICT (contact_id) DO UPDATE SET
    merged_into_contact_id = EXCLUDED.merged_into_contact_id,
    merged_at = EXCLUDED.merged_at,
    display_name = NULL, display_name_at = NULL, display_name_key = NULL,
    first_seen_at = NULL, last_seen_at = NULL;

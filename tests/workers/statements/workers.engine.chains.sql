-- _LOCK
WITH 
    touched AS (
        SELECT * FROM unnest(
            CAST(:persons AS text[]), CAST(:first_days AS date[]), CAST(:last_days AS date[]), CAST(:causes AS text[])
        ) AS given(person_key, first_day, last_day, cause)
        UNION ALL
        SELECT DISTINCT person_key, '-infinity'::date, 'infinity'::date, 'whole' FROM daily_people WHERE :everyone
    ), dirty AS (
        SELECT person_key,
               min(first_day) FILTER (WHERE cause <> 'message') AS first_day,
               max(last_day) FILTER (WHERE cause <> 'message') AS last_day,
               min(first_day) FILTER (WHERE cause = 'message') AS wrote_first_day,
               max(last_day) FILTER (WHERE cause = 'message') AS wrote_last_day
        FROM touched GROUP BY person_key
    ), talks AS (
        SELECT unnest(CAST(:conversations AS text[])) AS conversation_id
        UNION
        SELECT conversation_id FROM daily_conversations WHERE :everyone
    )
, buckets AS (
        SELECT DISTINCT hashtext(key) & 255 AS bucket FROM (
            SELECT 'person:' || person_key FROM dirty UNION ALL SELECT 'conversation:' || conversation_id FROM talks
        ) AS named(key)
    )
    SELECT (
        SELECT count(pg_advisory_xact_lock(1667788403, bucket))
        FROM (SELECT bucket FROM buckets ORDER BY bucket) AS ordered
    ), set_config('jit', 'off', true), set_config('plan_cache_mode', 'force_custom_plan', true);

-- _SETTLE
WITH 
    touched AS (
        SELECT * FROM unnest(
            CAST(:persons AS text[]), CAST(:first_days AS date[]), CAST(:last_days AS date[]), CAST(:causes AS text[])
        ) AS given(person_key, first_day, last_day, cause)
        UNION ALL
        SELECT DISTINCT person_key, '-infinity'::date, 'infinity'::date, 'whole' FROM daily_people WHERE :everyone
    ), dirty AS (
        SELECT person_key,
               min(first_day) FILTER (WHERE cause <> 'message') AS first_day,
               max(last_day) FILTER (WHERE cause <> 'message') AS last_day,
               min(first_day) FILTER (WHERE cause = 'message') AS wrote_first_day,
               max(last_day) FILTER (WHERE cause = 'message') AS wrote_last_day
        FROM touched GROUP BY person_key
    ), talks AS (
        SELECT unnest(CAST(:conversations AS text[])) AS conversation_id
        UNION
        SELECT conversation_id FROM daily_conversations WHERE :everyone
    )
, 
    looked_at AS (
        -- A row looked at for a message alone takes only its "wrote again": what else it found waits for the
        -- entry that caused it (a report stored since), so that a row and its day's all-ads row move together.
        SELECT row.ctid AS address, row.day, row.person_key, facts.wrote_again,
               CASE WHEN row.day BETWEEN dirty.first_day AND dirty.last_day THEN facts.replied ELSE row.replied END AS replied, CASE WHEN row.day BETWEEN dirty.first_day AND dirty.last_day THEN facts.reply_read ELSE row.reply_read END AS reply_read, CASE WHEN row.day BETWEEN dirty.first_day AND dirty.last_day THEN facts.first_reply_seconds ELSE row.first_reply_seconds END AS first_reply_seconds,
               facts.first_clicked_at, facts.first_message_id,
               row.day BETWEEN dirty.first_day AND dirty.last_day AS whole_day,
               (row.wrote_again, row.replied, row.reply_read, row.first_reply_seconds) AS stored
        FROM dirty
        CROSS JOIN LATERAL (SELECT ctid, * FROM ad_daily_people WHERE person_key = dirty.person_key OFFSET 0) AS row
        CROSS JOIN LATERAL (
    SELECT bool_or(fact.wrote) AS wrote_again, bool_or(fact.delivered) AS replied, bool_or(fact.read) AS reply_read,
           (array_agg(extract(epoch FROM fact.first_reply_at - click.clicked_at)
                      ORDER BY click.clicked_at, click.message_id))[1] AS first_reply_seconds,
           min(click.clicked_at) AS first_clicked_at,
           (array_agg(click.message_id ORDER BY click.clicked_at, click.message_id))[1] AS first_message_id
    FROM ad_clicks AS click
    CROSS JOIN LATERAL (
        SELECT EXISTS (
                   SELECT 1 FROM messages AS later
                   WHERE later.person_key = click.person_key
                     AND later.sent_at > click.clicked_at
                     AND later.sent_at <= click.clicked_at + attribution_window()
                     AND later.message_id <> click.message_id
               ) AS wrote,
               reply.first_reply_at, coalesce(reply.delivered, false) AS delivered,
               coalesce(reply.read, false) AS read
        FROM (
            SELECT min(reported.first_at) AS first_reply_at,
                   bool_or(status.rank IN (3, 4)) AS delivered,
                   bool_or(status.rank = 4) AS read
            FROM (
                SELECT message_id, min(reported_at) AS first_at FROM delivery_reports
                WHERE person_key = click.person_key
                  AND reported_at >= click.clicked_at AND reported_at <= click.clicked_at + attribution_window()
                GROUP BY message_id
            ) AS reported
            CROSS JOIN LATERAL (
                -- The reply's status as message_status has it: the highest in its order (FAILED over READ over
                -- DELIVERED…), from all its reports, read from the primary key's index.
                SELECT max(CASE report.status WHEN 'FAILED' THEN 5 WHEN 'READ' THEN 4 WHEN 'DELIVERED' THEN 3 WHEN 'QUEUED_ON_CHANNEL' THEN 2 WHEN 'SWITCHING_CHANNEL' THEN 1 ELSE 0 END) AS rank FROM delivery_reports AS report
                WHERE report.message_id = reported.message_id
            ) AS status
        ) AS reply
    ) AS fact
    WHERE click.person_key = row.person_key
      AND click.clicked_at >= (row.day::timestamp AT TIME ZONE 'UTC')
      AND click.clicked_at < ((row.day + 1)::timestamp AT TIME ZONE 'UTC')
      AND click.source_id IS NOT DISTINCT FROM row.source_id
) AS facts
        WHERE row.day BETWEEN dirty.first_day AND dirty.last_day
           OR (row.day BETWEEN dirty.wrote_first_day AND dirty.wrote_last_day AND NOT row.wrote_again)
    ), found AS (
        SELECT *, stored IS DISTINCT FROM (wrote_again, replied, reply_read, first_reply_seconds) AS changed FROM looked_at
    ), changed AS (
        -- The persons whose rows may change: a fact found differs, a click made a row, or they are settled whole.
        SELECT person_key FROM found WHERE changed
        UNION
        SELECT person_key FROM touched WHERE cause IN ('click', 'whole')
    ), found_all_ads AS (
        -- A day whose ad rows were all found (whole_day) is their sum; on a day touched only by messages, the ad
        -- rows whose "wrote again" was already true were not looked at, and a message changes nothing else: the
        -- all-ads row keeps its facts, and wrote again if any ad row now did.
        SELECT ads.day, ads.person_key,
               CASE WHEN ads.whole_day THEN ads.wrote_again ELSE kept.wrote_again OR ads.wrote_again END
                   AS wrote_again,
               CASE WHEN ads.whole_day THEN ads.replied ELSE kept.replied END AS replied, CASE WHEN ads.whole_day THEN ads.reply_read ELSE kept.reply_read END AS reply_read, CASE WHEN ads.whole_day THEN ads.first_reply_seconds ELSE kept.first_reply_seconds END AS first_reply_seconds
        FROM (
            SELECT day, person_key, bool_and(whole_day) AS whole_day,
                   bool_or(wrote_again) AS wrote_again, bool_or(replied) AS replied, bool_or(reply_read) AS reply_read,
                   (array_agg(first_reply_seconds ORDER BY first_clicked_at, first_message_id))[1]
                       AS first_reply_seconds
            FROM found GROUP BY day, person_key
        ) AS ads
        CROSS JOIN LATERAL (
            SELECT * FROM daily_people WHERE day = ads.day AND person_key = ads.person_key LIMIT 1
        ) AS kept
    )
,

    ad_daily_people_linked AS (
        SELECT address, wrote_again, replied, reply_read, first_reply_seconds,
               lag(day) OVER chain AS previous_day,
               max(day) FILTER (WHERE wrote_again) OVER before AS previous_wrote_again_day, max(day) FILTER (WHERE replied) OVER before AS previous_replied_day, max(day) FILTER (WHERE reply_read) OVER before AS previous_reply_read_day
        FROM (
            SELECT row.ctid AS address, row.day, row.source_id, row.person_key,
                   coalesce(found.wrote_again, row.wrote_again) AS wrote_again, coalesce(found.replied, row.replied) AS replied, coalesce(found.reply_read, row.reply_read) AS reply_read,
                   CASE WHEN found.wrote_again IS NULL THEN row.first_reply_seconds
                        ELSE found.first_reply_seconds END AS first_reply_seconds
            FROM changed CROSS JOIN LATERAL (SELECT ctid, * FROM ad_daily_people WHERE person_key = changed.person_key OFFSET 0) AS row
            LEFT JOIN found ON found.address = row.ctid
        ) AS settled
        WINDOW chain AS (PARTITION BY source_id, person_key ORDER BY day),
               before AS (chain ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)
    ), ad_daily_people_settled AS (
        UPDATE ad_daily_people AS row SET wrote_again = linked.wrote_again, replied = linked.replied, reply_read = linked.reply_read, first_reply_seconds = linked.first_reply_seconds, previous_day = linked.previous_day, previous_wrote_again_day = linked.previous_wrote_again_day, previous_replied_day = linked.previous_replied_day, previous_reply_read_day = linked.previous_reply_read_day
        FROM ad_daily_people_linked AS linked
        WHERE row.ctid = ANY(ARRAY(SELECT address FROM ad_daily_people_linked)) AND row.ctid = linked.address
          AND (row.wrote_again, row.replied, row.reply_read, row.first_reply_seconds, row.previous_day, row.previous_wrote_again_day, row.previous_replied_day, row.previous_reply_read_day)
              IS DISTINCT FROM (linked.wrote_again, linked.replied, linked.reply_read, linked.first_reply_seconds, linked.previous_day, linked.previous_wrote_again_day, linked.previous_replied_day, linked.previous_reply_read_day)
    )
    ,

    daily_people_linked AS (
        SELECT address, wrote_again, replied, reply_read, first_reply_seconds,
               lag(day) OVER chain AS previous_day,
               max(day) FILTER (WHERE wrote_again) OVER before AS previous_wrote_again_day, max(day) FILTER (WHERE replied) OVER before AS previous_replied_day, max(day) FILTER (WHERE reply_read) OVER before AS previous_reply_read_day
        FROM (
            SELECT row.ctid AS address, row.day, row.person_key,
                   coalesce(found_all_ads.wrote_again, row.wrote_again) AS wrote_again, coalesce(found_all_ads.replied, row.replied) AS replied, coalesce(found_all_ads.reply_read, row.reply_read) AS reply_read,
                   CASE WHEN found_all_ads.wrote_again IS NULL THEN row.first_reply_seconds
                        ELSE found_all_ads.first_reply_seconds END AS first_reply_seconds
            FROM changed CROSS JOIN LATERAL (SELECT ctid, * FROM daily_people WHERE person_key = changed.person_key OFFSET 0) AS row
            LEFT JOIN found_all_ads ON found_all_ads.day = row.day AND found_all_ads.person_key = row.person_key
        ) AS settled
        WINDOW chain AS (PARTITION BY person_key ORDER BY day),
               before AS (chain ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)
    ), daily_people_settled AS (
        UPDATE daily_people AS row SET wrote_again = linked.wrote_again, replied = linked.replied, reply_read = linked.reply_read, first_reply_seconds = linked.first_reply_seconds, previous_day = linked.previous_day, previous_wrote_again_day = linked.previous_wrote_again_day, previous_replied_day = linked.previous_replied_day, previous_reply_read_day = linked.previous_reply_read_day
        FROM daily_people_linked AS linked
        WHERE row.ctid = ANY(ARRAY(SELECT address FROM daily_people_linked)) AND row.ctid = linked.address
          AND (row.wrote_again, row.replied, row.reply_read, row.first_reply_seconds, row.previous_day, row.previous_wrote_again_day, row.previous_replied_day, row.previous_reply_read_day)
              IS DISTINCT FROM (linked.wrote_again, linked.replied, linked.reply_read, linked.first_reply_seconds, linked.previous_day, linked.previous_wrote_again_day, linked.previous_replied_day, linked.previous_reply_read_day)
    )
    ,

    ad_daily_conversations_linked AS (
        SELECT row.ctid AS address, lag(row.day) OVER (PARTITION BY row.source_id, row.conversation_id ORDER BY row.day) AS previous_day
        FROM talks CROSS JOIN LATERAL (SELECT ctid, * FROM ad_daily_conversations WHERE conversation_id = talks.conversation_id OFFSET 0) AS row
    ), ad_daily_conversations_settled AS (
        UPDATE ad_daily_conversations AS row SET previous_day = linked.previous_day
        FROM ad_daily_conversations_linked AS linked
        WHERE row.ctid = ANY(ARRAY(SELECT address FROM ad_daily_conversations_linked)) AND row.ctid = linked.address
          AND row.previous_day IS DISTINCT FROM linked.previous_day
    )
    , 
    daily_conversations_linked AS (
        SELECT row.ctid AS address, lag(row.day) OVER (PARTITION BY row.conversation_id ORDER BY row.day) AS previous_day
        FROM talks CROSS JOIN LATERAL (SELECT ctid, * FROM daily_conversations WHERE conversation_id = talks.conversation_id OFFSET 0) AS row
    ), daily_conversations_settled AS (
        UPDATE daily_conversations AS row SET previous_day = linked.previous_day
        FROM daily_conversations_linked AS linked
        WHERE row.ctid = ANY(ARRAY(SELECT address FROM daily_conversations_linked)) AND row.ctid = linked.address
          AND row.previous_day IS DISTINCT FROM linked.previous_day
    )

    SELECT count(*) FROM dirty;

-- _QUEUE
WITH 
    touched AS (
        -- A new message can only make earlier clicks' "wrote again" true: their rows are looked at while false.
        SELECT message.person_key, ((message.sent_at - attribution_window()) AT TIME ZONE 'UTC')::date AS first_day,
               ((message.sent_at) AT TIME ZONE 'UTC')::date AS last_day, 'message' AS cause
        FROM unnest(CAST(:messages AS text[])) AS given(message_id)
        CROSS JOIN LATERAL (
            SELECT person_key, sent_at FROM messages WHERE message_id = given.message_id LIMIT 1
        ) AS message
        WHERE message.person_key IS NOT NULL
        UNION ALL
        -- A new click changes its row's facts whatever they were (its first click, its windows).
        SELECT click.person_key, ((click.clicked_at) AT TIME ZONE 'UTC')::date, ((click.clicked_at) AT TIME ZONE 'UTC')::date,
               'click'
        FROM unnest(CAST(:clicks AS text[])) AS given(message_id)
        CROSS JOIN LATERAL (
            SELECT person_key, clicked_at FROM ad_clicks WHERE message_id = given.message_id LIMIT 1
        ) AS click
        WHERE click.person_key IS NOT NULL
        UNION ALL
        SELECT person.key, reply.first_day, reply.last_day, 'report'
        FROM unnest(CAST(:reports AS text[])) AS given(message_id)
        CROSS JOIN LATERAL (
            SELECT ((min(reported_at) - attribution_window()) AT TIME ZONE 'UTC')::date AS first_day,
                   ((max(reported_at)) AT TIME ZONE 'UTC')::date AS last_day,
                   array_agg(DISTINCT person_key) FILTER (WHERE person_key IS NOT NULL) AS persons
            FROM delivery_reports WHERE message_id = given.message_id
        ) AS reply
        CROSS JOIN LATERAL unnest(reply.persons) AS person(key)
    ), talks AS (
        SELECT click.conversation_id
        FROM unnest(CAST(:clicks AS text[])) AS given(message_id)
        CROSS JOIN LATERAL (
            SELECT conversation_id FROM ad_clicks WHERE message_id = given.message_id LIMIT 1
        ) AS click
        WHERE click.conversation_id IS NOT NULL
    )
, people AS (
        INSERT INTO chain_backlog (person_key, first_day, last_day, cause)
        SELECT person_key, min(first_day), max(last_day), cause FROM touched GROUP BY person_key, cause
    ), conversations AS (
        INSERT INTO chain_backlog (conversation_id) SELECT DISTINCT conversation_id FROM talks
    )
    SELECT 1;

-- _CLAIM
DELETE FROM chain_backlog
WHERE id IN (SELECT id FROM chain_backlog ORDER BY id LIMIT :limit FOR UPDATE SKIP LOCKED)
RETURNING person_key, first_day, last_day, cause, conversation_id;

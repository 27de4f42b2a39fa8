-- _LOCK
WITH 
    touched AS (
        SELECT person_key, ((sent_at - attribution_window()) AT TIME ZONE 'UTC')::date AS first_day,
               ((sent_at) AT TIME ZONE 'UTC')::date AS last_day
        FROM unnest(CAST(:messages AS text[])) AS given(message_id) JOIN messages USING (message_id)
        WHERE person_key IS NOT NULL
        UNION ALL
        SELECT report.person_key, reply.first_day, reply.last_day
        FROM (
            SELECT message_id, ((min(reported_at) - attribution_window()) AT TIME ZONE 'UTC')::date AS first_day,
                   ((max(reported_at)) AT TIME ZONE 'UTC')::date AS last_day
            FROM unnest(CAST(:reports AS text[])) AS given(message_id) JOIN delivery_reports USING (message_id)
            GROUP BY message_id
        ) AS reply
        JOIN delivery_reports AS report USING (message_id)
        WHERE report.person_key IS NOT NULL
        UNION ALL
        SELECT person_key, '-infinity'::date, 'infinity'::date FROM unnest(CAST(:persons AS text[])) AS person_key
        UNION ALL
        SELECT DISTINCT person_key, '-infinity'::date, 'infinity'::date FROM daily_people WHERE :everyone
    ), dirty AS (
        SELECT person_key, min(first_day) AS first_day, max(last_day) AS last_day FROM touched GROUP BY person_key
    ), talks AS (
        SELECT conversation_id
        FROM unnest(CAST(:messages AS text[])) AS given(message_id) JOIN ad_clicks USING (message_id)
        WHERE conversation_id IS NOT NULL
        UNION
        SELECT unnest(CAST(:conversations AS text[]))
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
    ), set_config('jit', 'off', true);

-- _SETTLE
WITH 
    touched AS (
        SELECT person_key, ((sent_at - attribution_window()) AT TIME ZONE 'UTC')::date AS first_day,
               ((sent_at) AT TIME ZONE 'UTC')::date AS last_day
        FROM unnest(CAST(:messages AS text[])) AS given(message_id) JOIN messages USING (message_id)
        WHERE person_key IS NOT NULL
        UNION ALL
        SELECT report.person_key, reply.first_day, reply.last_day
        FROM (
            SELECT message_id, ((min(reported_at) - attribution_window()) AT TIME ZONE 'UTC')::date AS first_day,
                   ((max(reported_at)) AT TIME ZONE 'UTC')::date AS last_day
            FROM unnest(CAST(:reports AS text[])) AS given(message_id) JOIN delivery_reports USING (message_id)
            GROUP BY message_id
        ) AS reply
        JOIN delivery_reports AS report USING (message_id)
        WHERE report.person_key IS NOT NULL
        UNION ALL
        SELECT person_key, '-infinity'::date, 'infinity'::date FROM unnest(CAST(:persons AS text[])) AS person_key
        UNION ALL
        SELECT DISTINCT person_key, '-infinity'::date, 'infinity'::date FROM daily_people WHERE :everyone
    ), dirty AS (
        SELECT person_key, min(first_day) AS first_day, max(last_day) AS last_day FROM touched GROUP BY person_key
    ), talks AS (
        SELECT conversation_id
        FROM unnest(CAST(:messages AS text[])) AS given(message_id) JOIN ad_clicks USING (message_id)
        WHERE conversation_id IS NOT NULL
        UNION
        SELECT unnest(CAST(:conversations AS text[]))
        UNION
        SELECT conversation_id FROM daily_conversations WHERE :everyone
    )
,

    ad_daily_people_settled AS (
        UPDATE ad_daily_people AS row SET wrote_again = linked.wrote_again, replied = linked.replied, reply_read = linked.reply_read, first_reply_seconds = linked.first_reply_seconds, previous_day = linked.previous_day, previous_wrote_again_day = linked.previous_wrote_again_day, previous_replied_day = linked.previous_replied_day, previous_reply_read_day = linked.previous_reply_read_day
        FROM (
            SELECT address, wrote_again, replied, reply_read, first_reply_seconds,
                   lag(day) OVER chain AS previous_day,
                   max(day) FILTER (WHERE wrote_again) OVER before AS previous_wrote_again_day, max(day) FILTER (WHERE replied) OVER before AS previous_replied_day, max(day) FILTER (WHERE reply_read) OVER before AS previous_reply_read_day
            FROM (
                SELECT row.ctid AS address, row.day, row.source_id, row.person_key,
                       coalesce(found.wrote_again, row.wrote_again) AS wrote_again, coalesce(found.replied, row.replied) AS replied, coalesce(found.reply_read, row.reply_read) AS reply_read,
                       CASE WHEN found.wrote_again IS NULL THEN row.first_reply_seconds
                            ELSE found.first_reply_seconds END AS first_reply_seconds
                FROM dirty
                CROSS JOIN LATERAL (SELECT ctid, * FROM ad_daily_people WHERE person_key = dirty.person_key) AS row
                LEFT JOIN LATERAL (
        SELECT bool_or(fact.wrote) AS wrote_again, bool_or(fact.delivered) AS replied, bool_or(fact.read) AS reply_read,
               (array_agg(extract(epoch FROM fact.first_reply_at - click.clicked_at)
                          ORDER BY click.clicked_at, click.message_id))[1] AS first_reply_seconds
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
                SELECT min(report.reported_at) AS first_reply_at,
                       bool_or(report.status IN ('DELIVERED', 'READ')) AS delivered,
                       bool_or(report.status = 'READ') AS read
                FROM (
                    -- Each reply's status as message_status has it, looked up by the reply's id.
                    SELECT report.reported_at,
                           (SELECT status FROM message_status WHERE message_status.message_id = report.message_id)
                               AS status
                    FROM delivery_reports AS report
                    WHERE report.person_key = click.person_key
                      AND report.reported_at >= click.clicked_at
                      AND report.reported_at <= click.clicked_at + attribution_window()
                ) AS report
            ) AS reply
        ) AS fact
        WHERE row.day BETWEEN dirty.first_day AND dirty.last_day
          AND click.person_key = row.person_key
          AND click.clicked_at >= (row.day::timestamp AT TIME ZONE 'UTC')
          AND click.clicked_at < ((row.day + 1)::timestamp AT TIME ZONE 'UTC')
          AND click.source_id IS NOT DISTINCT FROM row.source_id
        HAVING count(*) > 0
    ) AS found ON true
            ) AS settled
            WINDOW chain AS (PARTITION BY source_id, person_key ORDER BY day),
                   before AS (chain ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)
        ) AS linked
        WHERE row.ctid = linked.address
          AND (row.wrote_again, row.replied, row.reply_read, row.first_reply_seconds, row.previous_day, row.previous_wrote_again_day, row.previous_replied_day, row.previous_reply_read_day)
              IS DISTINCT FROM (linked.wrote_again, linked.replied, linked.reply_read, linked.first_reply_seconds, linked.previous_day, linked.previous_wrote_again_day, linked.previous_replied_day, linked.previous_reply_read_day)
    )
    , 
    daily_people_settled AS (
        UPDATE daily_people AS row SET wrote_again = linked.wrote_again, replied = linked.replied, reply_read = linked.reply_read, first_reply_seconds = linked.first_reply_seconds, previous_day = linked.previous_day, previous_wrote_again_day = linked.previous_wrote_again_day, previous_replied_day = linked.previous_replied_day, previous_reply_read_day = linked.previous_reply_read_day
        FROM (
            SELECT address, wrote_again, replied, reply_read, first_reply_seconds,
                   lag(day) OVER chain AS previous_day,
                   max(day) FILTER (WHERE wrote_again) OVER before AS previous_wrote_again_day, max(day) FILTER (WHERE replied) OVER before AS previous_replied_day, max(day) FILTER (WHERE reply_read) OVER before AS previous_reply_read_day
            FROM (
                SELECT row.ctid AS address, row.day, row.person_key,
                       coalesce(found.wrote_again, row.wrote_again) AS wrote_again, coalesce(found.replied, row.replied) AS replied, coalesce(found.reply_read, row.reply_read) AS reply_read,
                       CASE WHEN found.wrote_again IS NULL THEN row.first_reply_seconds
                            ELSE found.first_reply_seconds END AS first_reply_seconds
                FROM dirty
                CROSS JOIN LATERAL (SELECT ctid, * FROM daily_people WHERE person_key = dirty.person_key) AS row
                LEFT JOIN LATERAL (
        SELECT bool_or(fact.wrote) AS wrote_again, bool_or(fact.delivered) AS replied, bool_or(fact.read) AS reply_read,
               (array_agg(extract(epoch FROM fact.first_reply_at - click.clicked_at)
                          ORDER BY click.clicked_at, click.message_id))[1] AS first_reply_seconds
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
                SELECT min(report.reported_at) AS first_reply_at,
                       bool_or(report.status IN ('DELIVERED', 'READ')) AS delivered,
                       bool_or(report.status = 'READ') AS read
                FROM (
                    -- Each reply's status as message_status has it, looked up by the reply's id.
                    SELECT report.reported_at,
                           (SELECT status FROM message_status WHERE message_status.message_id = report.message_id)
                               AS status
                    FROM delivery_reports AS report
                    WHERE report.person_key = click.person_key
                      AND report.reported_at >= click.clicked_at
                      AND report.reported_at <= click.clicked_at + attribution_window()
                ) AS report
            ) AS reply
        ) AS fact
        WHERE row.day BETWEEN dirty.first_day AND dirty.last_day
          AND click.person_key = row.person_key
          AND click.clicked_at >= (row.day::timestamp AT TIME ZONE 'UTC')
          AND click.clicked_at < ((row.day + 1)::timestamp AT TIME ZONE 'UTC')

        HAVING count(*) > 0
    ) AS found ON true
            ) AS settled
            WINDOW chain AS (PARTITION BY person_key ORDER BY day),
                   before AS (chain ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)
        ) AS linked
        WHERE row.ctid = linked.address
          AND (row.wrote_again, row.replied, row.reply_read, row.first_reply_seconds, row.previous_day, row.previous_wrote_again_day, row.previous_replied_day, row.previous_reply_read_day)
              IS DISTINCT FROM (linked.wrote_again, linked.replied, linked.reply_read, linked.first_reply_seconds, linked.previous_day, linked.previous_wrote_again_day, linked.previous_replied_day, linked.previous_reply_read_day)
    )
    ,

    ad_daily_conversations_linked AS (
        UPDATE ad_daily_conversations AS row SET previous_day = linked.previous_day
        FROM (
            SELECT row.ctid AS address, lag(row.day) OVER (PARTITION BY row.source_id, row.conversation_id ORDER BY row.day) AS previous_day
            FROM talks
            CROSS JOIN LATERAL (SELECT ctid, * FROM ad_daily_conversations WHERE conversation_id = talks.conversation_id) AS row
        ) AS linked
        WHERE row.ctid = linked.address AND row.previous_day IS DISTINCT FROM linked.previous_day
    )
    , 
    daily_conversations_linked AS (
        UPDATE daily_conversations AS row SET previous_day = linked.previous_day
        FROM (
            SELECT row.ctid AS address, lag(row.day) OVER (PARTITION BY row.conversation_id ORDER BY row.day) AS previous_day
            FROM talks
            CROSS JOIN LATERAL (SELECT ctid, * FROM daily_conversations WHERE conversation_id = talks.conversation_id) AS row
        ) AS linked
        WHERE row.ctid = linked.address AND row.previous_day IS DISTINCT FROM linked.previous_day
    )

    SELECT count(*) FROM dirty;

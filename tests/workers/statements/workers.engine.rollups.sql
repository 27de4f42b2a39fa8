-- _COUNT_NEW
WITH new_clicks AS (SELECT * FROM ad_clicks WHERE message_id = ANY(CAST(:ids AS text[]))), 

    daily AS (
        INSERT INTO ad_daily AS daily
            (day, source_id, clicks, click_ids, headline, source_type, media_type, creative_at, creative_key)
        SELECT DISTINCT ON (day, source_id)
            day, source_id, count(*) OVER same, count(ctwa_clid) OVER same,
            headline, source_type, media_type, clicked_at, message_id
        FROM (SELECT *, (clicked_at AT TIME ZONE 'UTC')::date AS day FROM new_clicks) AS click
        WINDOW same AS (PARTITION BY day, source_id)
        ORDER BY day, source_id, clicked_at DESC, message_id DESC
        ON CONFLICT (day, source_id) DO UPDATE SET
            clicks = daily.clicks + EXCLUDED.clicks,
            click_ids = daily.click_ids + EXCLUDED.click_ids,
            headline = CASE WHEN (EXCLUDED.creative_at, EXCLUDED.creative_key) > (daily.creative_at, daily.creative_key) THEN EXCLUDED.headline ELSE daily.headline END,
source_type = CASE WHEN (EXCLUDED.creative_at, EXCLUDED.creative_key) > (daily.creative_at, daily.creative_key) THEN EXCLUDED.source_type ELSE daily.source_type END,
media_type = CASE WHEN (EXCLUDED.creative_at, EXCLUDED.creative_key) > (daily.creative_at, daily.creative_key) THEN EXCLUDED.media_type ELSE daily.media_type END,
creative_key = CASE WHEN (EXCLUDED.creative_at, EXCLUDED.creative_key) > (daily.creative_at, daily.creative_key) THEN EXCLUDED.creative_key ELSE daily.creative_key END,
            creative_at = GREATEST(daily.creative_at, EXCLUDED.creative_at)
    ), daily_people AS (
        INSERT INTO ad_daily_people (day, source_id, person_key)
        SELECT DISTINCT (clicked_at AT TIME ZONE 'UTC')::date, source_id, person_key FROM new_clicks WHERE person_key IS NOT NULL
        ON CONFLICT DO NOTHING
    ), daily_conversations AS (
        INSERT INTO ad_daily_conversations (day, source_id, conversation_id)
        SELECT DISTINCT (clicked_at AT TIME ZONE 'UTC')::date, source_id, conversation_id FROM new_clicks WHERE conversation_id IS NOT NULL
        ON CONFLICT DO NOTHING
    ), all_ads_people AS (
        INSERT INTO daily_people (day, person_key)
        SELECT DISTINCT (clicked_at AT TIME ZONE 'UTC')::date, person_key FROM new_clicks WHERE person_key IS NOT NULL
        ON CONFLICT DO NOTHING
    ), all_ads_conversations AS (
        INSERT INTO daily_conversations (day, conversation_id)
        SELECT DISTINCT (clicked_at AT TIME ZONE 'UTC')::date, conversation_id FROM new_clicks WHERE conversation_id IS NOT NULL
        ON CONFLICT DO NOTHING
    )

    INSERT INTO person_touches AS touches 
        SELECT first.person_key, first.contact_id, last.channel, last.identity, counted.clicks,
               first.message_id, first.source_id, first.headline, first.clicked_at,
               (first.clicked_at AT TIME ZONE 'UTC')::date,
               last.message_id, last.source_id, last.headline, last.clicked_at
        FROM (
            SELECT DISTINCT ON (person_key) * FROM new_clicks WHERE person_key IS NOT NULL
            ORDER BY person_key, clicked_at, message_id
        ) AS first
        JOIN (
            SELECT DISTINCT ON (person_key) * FROM new_clicks WHERE person_key IS NOT NULL
            ORDER BY person_key, clicked_at DESC, message_id DESC
        ) AS last USING (person_key)
        JOIN (
            SELECT person_key, count(*)::int AS clicks FROM new_clicks WHERE person_key IS NOT NULL GROUP BY person_key
        ) AS counted USING (person_key)

    ON CONFLICT (person_key) DO UPDATE SET
        clicks = touches.clicks + EXCLUDED.clicks,
        first_message_id = CASE WHEN (EXCLUDED.first_clicked_at, EXCLUDED.first_message_id) < (touches.first_clicked_at, touches.first_message_id) THEN EXCLUDED.first_message_id ELSE touches.first_message_id END,
first_source_id = CASE WHEN (EXCLUDED.first_clicked_at, EXCLUDED.first_message_id) < (touches.first_clicked_at, touches.first_message_id) THEN EXCLUDED.first_source_id ELSE touches.first_source_id END,
first_headline = CASE WHEN (EXCLUDED.first_clicked_at, EXCLUDED.first_message_id) < (touches.first_clicked_at, touches.first_message_id) THEN EXCLUDED.first_headline ELSE touches.first_headline END,
first_day = CASE WHEN (EXCLUDED.first_clicked_at, EXCLUDED.first_message_id) < (touches.first_clicked_at, touches.first_message_id) THEN EXCLUDED.first_day ELSE touches.first_day END,
        first_clicked_at = LEAST(touches.first_clicked_at, EXCLUDED.first_clicked_at),
        last_message_id = CASE WHEN (EXCLUDED.last_clicked_at, EXCLUDED.last_message_id) > (touches.last_clicked_at, touches.last_message_id) THEN EXCLUDED.last_message_id ELSE touches.last_message_id END,
last_source_id = CASE WHEN (EXCLUDED.last_clicked_at, EXCLUDED.last_message_id) > (touches.last_clicked_at, touches.last_message_id) THEN EXCLUDED.last_source_id ELSE touches.last_source_id END,
last_headline = CASE WHEN (EXCLUDED.last_clicked_at, EXCLUDED.last_message_id) > (touches.last_clicked_at, touches.last_message_id) THEN EXCLUDED.last_headline ELSE touches.last_headline END,
channel = CASE WHEN (EXCLUDED.last_clicked_at, EXCLUDED.last_message_id) > (touches.last_clicked_at, touches.last_message_id) THEN EXCLUDED.channel ELSE touches.channel END,
identity = CASE WHEN (EXCLUDED.last_clicked_at, EXCLUDED.last_message_id) > (touches.last_clicked_at, touches.last_message_id) THEN EXCLUDED.identity ELSE touches.identity END,
        last_clicked_at = GREATEST(touches.last_clicked_at, EXCLUDED.last_clicked_at);

-- _PERSON_KEYS
SELECT array_agg(DISTINCT key ORDER BY key) FROM (
    SELECT person_key(contact_id, NULL, NULL) FROM unnest(CAST(:contacts AS text[])) AS contact_id
    UNION ALL
    SELECT person_key(NULL, channel, identity)
    FROM unnest(CAST(:channels AS text[]), CAST(:identities AS text[])) AS given(channel, identity)
) AS persons(key);

-- _REFRESH[0]
DELETE FROM person_touches WHERE person_key = ANY(:keys);

-- _REFRESH[1]
DELETE FROM ad_daily_people WHERE person_key = ANY(:keys);

-- _REFRESH[2]
DELETE FROM daily_people WHERE person_key = ANY(:keys);

-- _REFRESH[3]
DELETE FROM chain_backlog WHERE person_key = ANY(:keys);

-- _REFRESH[4]
WITH concerned AS (SELECT * FROM ad_clicks WHERE person_key = ANY(:keys))
INSERT INTO person_touches 
SELECT first.person_key, first.contact_id, last.channel, last.identity, counted.clicks,
       first.message_id, first.source_id, first.headline, first.clicked_at,
       (first.clicked_at AT TIME ZONE 'UTC')::date,
       last.message_id, last.source_id, last.headline, last.clicked_at
FROM (
    SELECT DISTINCT ON (person_key) * FROM concerned WHERE person_key IS NOT NULL
    ORDER BY person_key, clicked_at, message_id
) AS first
JOIN (
    SELECT DISTINCT ON (person_key) * FROM concerned WHERE person_key IS NOT NULL
    ORDER BY person_key, clicked_at DESC, message_id DESC
) AS last USING (person_key)
JOIN (
    SELECT person_key, count(*)::int AS clicks FROM concerned WHERE person_key IS NOT NULL GROUP BY person_key
) AS counted USING (person_key);

-- _REFRESH[5]
INSERT INTO ad_daily_people (day, source_id, person_key)
SELECT DISTINCT (clicked_at AT TIME ZONE 'UTC')::date, source_id, person_key FROM ad_clicks WHERE person_key = ANY(:keys);

-- _REFRESH[6]
INSERT INTO daily_people (day, person_key)
SELECT DISTINCT (clicked_at AT TIME ZONE 'UTC')::date, person_key FROM ad_clicks WHERE person_key = ANY(:keys);

-- _REFRESH_CONVERSIONS
UPDATE conversion_events AS event
   SET click_source_id = click.source_id, click_person_key = click.person_key, click_app_id = click.app_id
   FROM ad_clicks AS click
   WHERE click.message_id = event.click_message_id
     AND (event.click_source_id, event.click_person_key, event.click_app_id)
         IS DISTINCT FROM (click.source_id, click.person_key, click.app_id)
AND (click.person_key = ANY(:keys) OR event.click_person_key = ANY(:keys));

-- _REBUILD[0]
TRUNCATE person_touches, ad_daily, ad_daily_people, daily_people, ad_daily_conversations, daily_conversations, chain_backlog;

-- _REBUILD[1]
WITH 

    daily AS (
        INSERT INTO ad_daily AS daily
            (day, source_id, clicks, click_ids, headline, source_type, media_type, creative_at, creative_key)
        SELECT DISTINCT ON (day, source_id)
            day, source_id, count(*) OVER same, count(ctwa_clid) OVER same,
            headline, source_type, media_type, clicked_at, message_id
        FROM (SELECT *, (clicked_at AT TIME ZONE 'UTC')::date AS day FROM ad_clicks) AS click
        WINDOW same AS (PARTITION BY day, source_id)
        ORDER BY day, source_id, clicked_at DESC, message_id DESC
        ON CONFLICT (day, source_id) DO UPDATE SET
            clicks = daily.clicks + EXCLUDED.clicks,
            click_ids = daily.click_ids + EXCLUDED.click_ids,
            headline = CASE WHEN (EXCLUDED.creative_at, EXCLUDED.creative_key) > (daily.creative_at, daily.creative_key) THEN EXCLUDED.headline ELSE daily.headline END,
source_type = CASE WHEN (EXCLUDED.creative_at, EXCLUDED.creative_key) > (daily.creative_at, daily.creative_key) THEN EXCLUDED.source_type ELSE daily.source_type END,
media_type = CASE WHEN (EXCLUDED.creative_at, EXCLUDED.creative_key) > (daily.creative_at, daily.creative_key) THEN EXCLUDED.media_type ELSE daily.media_type END,
creative_key = CASE WHEN (EXCLUDED.creative_at, EXCLUDED.creative_key) > (daily.creative_at, daily.creative_key) THEN EXCLUDED.creative_key ELSE daily.creative_key END,
            creative_at = GREATEST(daily.creative_at, EXCLUDED.creative_at)
    ), daily_people AS (
        INSERT INTO ad_daily_people (day, source_id, person_key)
        SELECT DISTINCT (clicked_at AT TIME ZONE 'UTC')::date, source_id, person_key FROM ad_clicks WHERE person_key IS NOT NULL
        ON CONFLICT DO NOTHING
    ), daily_conversations AS (
        INSERT INTO ad_daily_conversations (day, source_id, conversation_id)
        SELECT DISTINCT (clicked_at AT TIME ZONE 'UTC')::date, source_id, conversation_id FROM ad_clicks WHERE conversation_id IS NOT NULL
        ON CONFLICT DO NOTHING
    ), all_ads_people AS (
        INSERT INTO daily_people (day, person_key)
        SELECT DISTINCT (clicked_at AT TIME ZONE 'UTC')::date, person_key FROM ad_clicks WHERE person_key IS NOT NULL
        ON CONFLICT DO NOTHING
    ), all_ads_conversations AS (
        INSERT INTO daily_conversations (day, conversation_id)
        SELECT DISTINCT (clicked_at AT TIME ZONE 'UTC')::date, conversation_id FROM ad_clicks WHERE conversation_id IS NOT NULL
        ON CONFLICT DO NOTHING
    )

    INSERT INTO person_touches AS touches 
        SELECT first.person_key, first.contact_id, last.channel, last.identity, counted.clicks,
               first.message_id, first.source_id, first.headline, first.clicked_at,
               (first.clicked_at AT TIME ZONE 'UTC')::date,
               last.message_id, last.source_id, last.headline, last.clicked_at
        FROM (
            SELECT DISTINCT ON (person_key) * FROM ad_clicks WHERE person_key IS NOT NULL
            ORDER BY person_key, clicked_at, message_id
        ) AS first
        JOIN (
            SELECT DISTINCT ON (person_key) * FROM ad_clicks WHERE person_key IS NOT NULL
            ORDER BY person_key, clicked_at DESC, message_id DESC
        ) AS last USING (person_key)
        JOIN (
            SELECT person_key, count(*)::int AS clicks FROM ad_clicks WHERE person_key IS NOT NULL GROUP BY person_key
        ) AS counted USING (person_key)

    ON CONFLICT (person_key) DO UPDATE SET
        clicks = touches.clicks + EXCLUDED.clicks,
        first_message_id = CASE WHEN (EXCLUDED.first_clicked_at, EXCLUDED.first_message_id) < (touches.first_clicked_at, touches.first_message_id) THEN EXCLUDED.first_message_id ELSE touches.first_message_id END,
first_source_id = CASE WHEN (EXCLUDED.first_clicked_at, EXCLUDED.first_message_id) < (touches.first_clicked_at, touches.first_message_id) THEN EXCLUDED.first_source_id ELSE touches.first_source_id END,
first_headline = CASE WHEN (EXCLUDED.first_clicked_at, EXCLUDED.first_message_id) < (touches.first_clicked_at, touches.first_message_id) THEN EXCLUDED.first_headline ELSE touches.first_headline END,
first_day = CASE WHEN (EXCLUDED.first_clicked_at, EXCLUDED.first_message_id) < (touches.first_clicked_at, touches.first_message_id) THEN EXCLUDED.first_day ELSE touches.first_day END,
        first_clicked_at = LEAST(touches.first_clicked_at, EXCLUDED.first_clicked_at),
        last_message_id = CASE WHEN (EXCLUDED.last_clicked_at, EXCLUDED.last_message_id) > (touches.last_clicked_at, touches.last_message_id) THEN EXCLUDED.last_message_id ELSE touches.last_message_id END,
last_source_id = CASE WHEN (EXCLUDED.last_clicked_at, EXCLUDED.last_message_id) > (touches.last_clicked_at, touches.last_message_id) THEN EXCLUDED.last_source_id ELSE touches.last_source_id END,
last_headline = CASE WHEN (EXCLUDED.last_clicked_at, EXCLUDED.last_message_id) > (touches.last_clicked_at, touches.last_message_id) THEN EXCLUDED.last_headline ELSE touches.last_headline END,
channel = CASE WHEN (EXCLUDED.last_clicked_at, EXCLUDED.last_message_id) > (touches.last_clicked_at, touches.last_message_id) THEN EXCLUDED.channel ELSE touches.channel END,
identity = CASE WHEN (EXCLUDED.last_clicked_at, EXCLUDED.last_message_id) > (touches.last_clicked_at, touches.last_message_id) THEN EXCLUDED.identity ELSE touches.identity END,
        last_clicked_at = GREATEST(touches.last_clicked_at, EXCLUDED.last_clicked_at);

-- _REBUILD[2]
UPDATE conversion_events AS event
SET click_source_id = click.source_id, click_person_key = click.person_key, click_app_id = click.app_id
FROM ad_clicks AS click
WHERE click.message_id = event.click_message_id
  AND (event.click_source_id, event.click_person_key, event.click_app_id)
      IS DISTINCT FROM (click.source_id, click.person_key, click.app_id);

-- _RECOMPUTE_DAYS[0]
DELETE FROM ad_daily USING unnest(CAST(:days AS date[]), CAST(:sources AS text[])) AS concerned(day, source_id) WHERE ad_daily.day = concerned.day AND ad_daily.source_id IS NOT DISTINCT FROM concerned.source_id;

-- _RECOMPUTE_DAYS[1]
DELETE FROM ad_daily_people USING unnest(CAST(:days AS date[]), CAST(:sources AS text[])) AS concerned(day, source_id) WHERE ad_daily_people.day = concerned.day AND ad_daily_people.source_id IS NOT DISTINCT FROM concerned.source_id;

-- _RECOMPUTE_DAYS[2]
DELETE FROM ad_daily_conversations USING unnest(CAST(:days AS date[]), CAST(:sources AS text[])) AS concerned(day, source_id) WHERE ad_daily_conversations.day = concerned.day AND ad_daily_conversations.source_id IS NOT DISTINCT FROM concerned.source_id;

-- _RECOMPUTE_DAYS[3]
WITH day_clicks AS (
            SELECT click.* FROM ad_clicks AS click JOIN unnest(CAST(:days AS date[]), CAST(:sources AS text[])) AS concerned(day, source_id)
            ON (click.clicked_at AT TIME ZONE 'UTC')::date = concerned.day
               AND click.source_id IS NOT DISTINCT FROM concerned.source_id
        ), 
    daily AS (
        INSERT INTO ad_daily AS daily
            (day, source_id, clicks, click_ids, headline, source_type, media_type, creative_at, creative_key)
        SELECT DISTINCT ON (day, source_id)
            day, source_id, count(*) OVER same, count(ctwa_clid) OVER same,
            headline, source_type, media_type, clicked_at, message_id
        FROM (SELECT *, (clicked_at AT TIME ZONE 'UTC')::date AS day FROM day_clicks) AS click
        WINDOW same AS (PARTITION BY day, source_id)
        ORDER BY day, source_id, clicked_at DESC, message_id DESC
        ON CONFLICT (day, source_id) DO UPDATE SET
            clicks = daily.clicks + EXCLUDED.clicks,
            click_ids = daily.click_ids + EXCLUDED.click_ids,
            headline = CASE WHEN (EXCLUDED.creative_at, EXCLUDED.creative_key) > (daily.creative_at, daily.creative_key) THEN EXCLUDED.headline ELSE daily.headline END,
source_type = CASE WHEN (EXCLUDED.creative_at, EXCLUDED.creative_key) > (daily.creative_at, daily.creative_key) THEN EXCLUDED.source_type ELSE daily.source_type END,
media_type = CASE WHEN (EXCLUDED.creative_at, EXCLUDED.creative_key) > (daily.creative_at, daily.creative_key) THEN EXCLUDED.media_type ELSE daily.media_type END,
creative_key = CASE WHEN (EXCLUDED.creative_at, EXCLUDED.creative_key) > (daily.creative_at, daily.creative_key) THEN EXCLUDED.creative_key ELSE daily.creative_key END,
            creative_at = GREATEST(daily.creative_at, EXCLUDED.creative_at)
    ), daily_people AS (
        INSERT INTO ad_daily_people (day, source_id, person_key)
        SELECT DISTINCT (clicked_at AT TIME ZONE 'UTC')::date, source_id, person_key FROM day_clicks WHERE person_key IS NOT NULL
        ON CONFLICT DO NOTHING
    ), daily_conversations AS (
        INSERT INTO ad_daily_conversations (day, source_id, conversation_id)
        SELECT DISTINCT (clicked_at AT TIME ZONE 'UTC')::date, source_id, conversation_id FROM day_clicks WHERE conversation_id IS NOT NULL
        ON CONFLICT DO NOTHING
    ), all_ads_people AS (
        INSERT INTO daily_people (day, person_key)
        SELECT DISTINCT (clicked_at AT TIME ZONE 'UTC')::date, person_key FROM day_clicks WHERE person_key IS NOT NULL
        ON CONFLICT DO NOTHING
    ), all_ads_conversations AS (
        INSERT INTO daily_conversations (day, conversation_id)
        SELECT DISTINCT (clicked_at AT TIME ZONE 'UTC')::date, conversation_id FROM day_clicks WHERE conversation_id IS NOT NULL
        ON CONFLICT DO NOTHING
    )

        SELECT count(*) FROM day_clicks;

-- _RECOMPUTE_ALL_ADS[0]
WITH people AS (
    DELETE FROM daily_people WHERE day = ANY(CAST(:days AS date[])) RETURNING person_key
), talks AS (
    DELETE FROM daily_conversations WHERE day = ANY(CAST(:days AS date[])) RETURNING conversation_id
)
SELECT (SELECT array_agg(DISTINCT person_key) FROM people) AS persons,
       (SELECT array_agg(DISTINCT conversation_id) FROM talks) AS conversations;

-- _RECOMPUTE_ALL_ADS[1]
WITH day_clicks AS (
    SELECT days.day, click.person_key, click.conversation_id
    FROM (SELECT DISTINCT day FROM unnest(CAST(:days AS date[])) AS day) AS days
    JOIN ad_clicks AS click
    ON click.clicked_at >= (days.day::timestamp AT TIME ZONE 'UTC')
       AND click.clicked_at < ((days.day + 1)::timestamp AT TIME ZONE 'UTC')
), people AS (
            INSERT INTO daily_people (day, person_key)
            SELECT DISTINCT day, person_key FROM day_clicks WHERE person_key IS NOT NULL
            RETURNING person_key
        ), talks AS (
            INSERT INTO daily_conversations (day, conversation_id)
            SELECT DISTINCT day, conversation_id FROM day_clicks WHERE conversation_id IS NOT NULL
            RETURNING conversation_id
        )
        SELECT (SELECT array_agg(DISTINCT person_key) FROM people) AS persons,
               (SELECT array_agg(DISTINCT conversation_id) FROM talks) AS conversations;

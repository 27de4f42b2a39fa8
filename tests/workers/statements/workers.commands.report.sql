-- ADS_REPORT
WITH clicks AS (
    SELECT source_id, sum(clicks)::int AS clicks, sum(click_ids)::int AS click_ids,
           (array_agg(headline ORDER BY creative_at DESC, creative_key DESC))[1] AS headline,
           (array_agg(source_type ORDER BY creative_at DESC, creative_key DESC))[1] AS source_type,
           (array_agg(media_type ORDER BY creative_at DESC, creative_key DESC))[1] AS media_type
    FROM ad_daily WHERE day BETWEEN :since AND :until GROUP BY source_id
), people AS (
    SELECT source_id, count(*)::int AS people
    FROM (SELECT DISTINCT source_id, person_key FROM ad_daily_people WHERE day BETWEEN :since AND :until) AS d
    GROUP BY source_id
), newcomers AS (
    SELECT first_source_id AS source_id, count(*)::int AS new_people
    FROM person_touches WHERE first_day BETWEEN :since AND :until GROUP BY first_source_id
), talks AS (
    SELECT source_id, count(*)::int AS conversations
    FROM (
        SELECT DISTINCT source_id, conversation_id FROM ad_daily_conversations WHERE day BETWEEN :since AND :until
    ) AS d
    GROUP BY source_id
), conversions AS (
    SELECT click.source_id, count(*)::int AS conversions,
           (
               SELECT jsonb_object_agg(currency, amount) FROM (
                   SELECT counted.currency, sum(counted.value) AS amount
                   FROM unnest(array_agg(event.currency), array_agg(event.value)) AS counted(currency, value)
                   WHERE counted.value IS NOT NULL
                   GROUP BY counted.currency
               ) AS per_currency
           ) AS value,
           count(DISTINCT click.person_key)::int AS people_converted
    FROM conversion_events AS event
    JOIN ad_clicks AS click ON click.message_id = event.click_message_id
    WHERE (event.event_time AT TIME ZONE 'UTC')::date BETWEEN :since AND :until AND event.status IN ('pending', 'sending', 'sent', 'unconfirmed')
    GROUP BY click.source_id
), ads AS (
    SELECT source_id FROM clicks UNION SELECT source_id FROM conversions
)
SELECT ads.source_id, clicks.headline, clicks.source_type, clicks.media_type,
       coalesce(clicks.clicks, 0) AS clicks, coalesce(clicks.click_ids, 0) AS click_ids,
       coalesce(people.people, 0) AS people, coalesce(newcomers.new_people, 0) AS new_people,
       coalesce(talks.conversations, 0) AS conversations, coalesce(conversions.conversions, 0) AS conversions,
       coalesce(conversions.value, '{}')::text AS value,
       coalesce(conversions.people_converted, 0) AS people_converted,
       round(coalesce(conversions.people_converted, 0)::numeric / nullif(people.people, 0), 3) AS conversion_rate
FROM ads
LEFT JOIN clicks ON clicks.source_id IS NOT DISTINCT FROM ads.source_id
LEFT JOIN people ON people.source_id IS NOT DISTINCT FROM ads.source_id
LEFT JOIN newcomers ON newcomers.source_id IS NOT DISTINCT FROM ads.source_id
LEFT JOIN talks ON talks.source_id IS NOT DISTINCT FROM ads.source_id
LEFT JOIN conversions ON conversions.source_id IS NOT DISTINCT FROM ads.source_id
ORDER BY coalesce(clicks.clicks, 0) DESC, ads.source_id;

-- DAILY_REPORT
SELECT day, source_id, max(headline) AS headline, max(source_type) AS source_type,
       max(media_type) AS media_type, sum(clicks)::int AS clicks, sum(click_ids)::int AS click_ids,
       sum(people)::int AS people, sum(new_people)::int AS new_people,
       sum(conversations)::int AS conversations, sum(conversions)::int AS conversions,
       coalesce(max(value), '{}') AS value, sum(people_converted)::int AS people_converted,
       round(sum(people_converted)::numeric / nullif(sum(people), 0), 3) AS conversion_rate
FROM (
    SELECT day, source_id, headline, source_type, media_type, clicks, click_ids, people, new_people,
           conversations, 0 AS conversions, NULL AS value, 0 AS people_converted
    FROM ad_performance_daily WHERE day BETWEEN :since AND :until
    UNION ALL
    SELECT day, source_id, NULL, NULL, NULL, 0, 0, 0, 0, 0, conversions, value_by_currency::text,
           people_converted
    FROM ad_conversions_daily WHERE day BETWEEN :since AND :until
) AS stacked
GROUP BY day, source_id
ORDER BY day, clicks DESC, source_id;

-- _PEOPLE
SELECT contact_id, channel, identity, first_source_id, first_clicked_at, last_source_id, last_clicked_at, clicks FROM person_attribution WHERE last_clicked_at >= :start AND last_clicked_at < :end ORDER BY last_clicked_at DESC, person_key LIMIT :limit;

-- ADS_REPORT
SELECT source_id, headline, source_type, media_type, clicks, click_ids, people, new_people, conversations, conversions, value::text AS value, people_converted, conversion_rate
FROM ad_report(:since, :until)
ORDER BY clicks DESC, source_id;

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

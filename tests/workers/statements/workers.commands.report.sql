-- ADS_REPORT
SELECT source_id, headline, source_type, media_type, clicks, click_ids, people, new_people, conversations, conversions, value::text AS value, people_converted, conversion_rate
FROM ad_report(:since, :until)
ORDER BY clicks DESC, source_id;

-- APP_ADS_REPORT
SELECT source_id, headline, source_type, media_type, clicks, click_ids, people, new_people, conversations, conversions, value::text AS value, people_converted, conversion_rate
FROM app_ad_report(:since, :until, :app)
ORDER BY clicks DESC, source_id;

-- APPS_REPORT
SELECT app.app_id, app.name AS app_name,
       (SELECT count(*) FROM app_ad_report(:since, :until, app.app_id) AS ad WHERE ad.clicks > 0)::int AS ads,
       figures.clicks, figures.click_ids, figures.people, figures.new_people, figures.conversations,
       figures.conversions, figures.value::text AS value, figures.people_converted, figures.conversion_rate
FROM app_names() AS app
CROSS JOIN LATERAL app_range_report(:since, :until, app.app_id) AS figures
ORDER BY figures.clicks DESC, app.app_id;

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

-- APP_DAILY_REPORT
SELECT CAST(day AS date) AS day, ad.source_id, ad.headline, ad.source_type, ad.media_type, ad.clicks, ad.click_ids, ad.people, ad.new_people, ad.conversations, ad.conversions, ad.value::text AS value, ad.people_converted, ad.conversion_rate
FROM generate_series(CAST(:since AS timestamp), CAST(:until AS timestamp), interval '1 day') AS day
CROSS JOIN LATERAL app_ad_report(CAST(day AS date), CAST(day AS date), CAST(:app AS text)) AS ad
ORDER BY 1, ad.clicks DESC, ad.source_id;

-- _PEOPLE
SELECT contact_id, channel, identity, first_source_id, first_clicked_at, last_source_id, last_clicked_at, clicks FROM person_attribution WHERE last_clicked_at >= :start AND last_clicked_at < :end AND (CAST(:app AS text) IS NULL OR last_app_id = :app OR first_app_id = :app) ORDER BY last_clicked_at DESC, person_key LIMIT :limit;

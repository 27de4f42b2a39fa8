-- _SUMMARY[False]
SELECT clicks, people, new_people, conversations, conversions, people_converted, conversion_rate, value::text AS value FROM range_report(:since, :until);

-- _SUMMARY[True]
SELECT clicks, people, new_people, conversations, conversions, people_converted, conversion_rate, value::text AS value FROM app_range_report(:since, :until, :app);

-- _DAILY[all]
SELECT day.day, coalesce(clicks, 0) AS clicks, coalesce(people, 0) AS people,
       coalesce(new_people, 0) AS new_people, coalesce(conversations, 0) AS conversations,
       coalesce(conversions, 0) AS conversions, coalesce(value_by_currency, '{}')::text AS value
FROM (
    SELECT CAST(day AS date) AS day
    FROM generate_series(CAST(:since AS timestamp), CAST(:until AS timestamp), interval '1 day') AS day
) AS day
LEFT JOIN (
    SELECT day, clicks, people, new_people, conversations FROM performance_daily
    WHERE day BETWEEN :since AND :until
) AS performance ON performance.day = day.day
LEFT JOIN (
    SELECT day, conversions, value_by_currency FROM conversions_daily
    WHERE day BETWEEN :since AND :until
) AS converted ON converted.day = day.day
ORDER BY day.day;

-- _DAILY[ad]
SELECT day.day, coalesce(clicks, 0) AS clicks, coalesce(people, 0) AS people,
       coalesce(new_people, 0) AS new_people, coalesce(conversations, 0) AS conversations,
       coalesce(conversions, 0) AS conversions, coalesce(value_by_currency, '{}')::text AS value
FROM (
    SELECT CAST(day AS date) AS day
    FROM generate_series(CAST(:since AS timestamp), CAST(:until AS timestamp), interval '1 day') AS day
) AS day
LEFT JOIN (
    SELECT day, clicks, people, new_people, conversations FROM ad_performance_daily
    WHERE day BETWEEN :since AND :until AND source_id = :source_id
) AS performance ON performance.day = day.day
LEFT JOIN (
    SELECT day, conversions, value_by_currency FROM ad_conversions_daily
    WHERE day BETWEEN :since AND :until AND source_id = :source_id
) AS converted ON converted.day = day.day
ORDER BY day.day;

-- _DAILY[app]
SELECT day.day, coalesce(clicks, 0) AS clicks, coalesce(people, 0) AS people,
       coalesce(new_people, 0) AS new_people, coalesce(conversations, 0) AS conversations,
       coalesce(conversions, 0) AS conversions, coalesce(value_by_currency, '{}')::text AS value
FROM (
    SELECT CAST(day AS date) AS day
    FROM generate_series(CAST(:since AS timestamp), CAST(:until AS timestamp), interval '1 day') AS day
) AS day
LEFT JOIN app_daily(CAST(:since AS date), CAST(:until AS date), CAST(:app AS text)) AS app ON app.day = day.day
ORDER BY day.day;

-- _ENGAGEMENT
SELECT * FROM engagement_report(:since, :until, :per_ad);

-- _APP_ENGAGEMENT
SELECT * FROM app_engagement(:since, :until, :app, :per_ad);

-- _CREATIVES
SELECT * FROM ad_creatives(:since, :until, :source_id);

-- _CONVERSIONS
SELECT events::text AS events, oldest_pending_event_id, oldest_pending_event_time,
       extract(epoch FROM now() - oldest_pending_event_time) AS oldest_pending_age_s,
       parked_reason, parked_code, parked_at, last_request_at, last_success_at
FROM conversion_overview;

-- _APPS
SELECT app_id, name FROM app_names();

-- _PARKED_APPS
SELECT app_id, name, parked_reason, parked_code, parked_at FROM conversion_app_overview
WHERE parked_reason IS NOT NULL OR parked_at IS NOT NULL
ORDER BY name NULLS LAST, app_id;

-- _FRESHNESS
SELECT newest_stored_at, extract(epoch FROM now() - newest_stored_at) AS age_s FROM ingest_freshness;

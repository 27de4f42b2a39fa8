-- _ANY_PENDING
SELECT EXISTS (
    SELECT FROM conversion_events WHERE status = 'pending' AND (sent_ctwa_clid IS NULL OR (
        coalesce(click_app_id, '') <> ALL(CAST(:held_apps AS text[]))
        AND NOT (CAST(:default_held AS boolean) AND coalesce(click_app_id, '') <> ALL(CAST(:own_apps AS text[])))
    ))
);

-- _EXPIRE
UPDATE conversion_events SET status = 'expired', last_error = 'older than 7 days before it could be sent'
WHERE status IN ('pending', 'unconfigured') AND event_time <= now() - CAST(:age AS interval);

-- _RECOVER
UPDATE conversion_events SET status = 'unconfirmed',
    last_error = 'its sender stopped mid-request: Meta may have counted it'
WHERE status IN ('sending') AND claimed_at < now() - make_interval(secs => :lease);

-- _DUE
SELECT id, event_id, event_name, event_time, contact_id, channel, identity, ctwa_clid, value, currency,
       custom_data
FROM conversion_events
WHERE status IN ('pending', 'unattributed') AND next_attempt_at <= now() AND event_time > now() - CAST(:age AS interval)
  AND (sent_ctwa_clid IS NULL OR (
      coalesce(click_app_id, '') <> ALL(CAST(:held_apps AS text[]))
      AND NOT (CAST(:default_held AS boolean) AND coalesce(click_app_id, '') <> ALL(CAST(:own_apps AS text[])))
  ))
ORDER BY next_attempt_at, id
LIMIT :limit
FOR UPDATE SKIP LOCKED;

-- _MARK[send]
UPDATE conversion_events AS event
SET status = 'sending', claimed_at = now(), attempts = attempts + 1, sent_ctwa_clid = claimed.clid, click_message_id = claimed.click,
    click_source_id = click.source_id, click_person_key = click.person_key, click_app_id = claimed.app
FROM unnest(CAST(:ids AS bigint[]), CAST(:clids AS text[]), CAST(:clicks AS text[]), CAST(:apps AS text[]))
    AS claimed(id, clid, click, app)
LEFT JOIN ad_clicks AS click ON click.message_id = claimed.click
WHERE event.id = claimed.id AND status IN ('pending', 'unattributed');

-- _MARK[hold]
UPDATE conversion_events AS event
SET status = 'pending', last_error = 'its app''s Meta setup is parked or paused: sent once it is not', sent_ctwa_clid = claimed.clid, click_message_id = claimed.click,
    click_source_id = click.source_id, click_person_key = click.person_key, click_app_id = claimed.app
FROM unnest(CAST(:ids AS bigint[]), CAST(:clids AS text[]), CAST(:clicks AS text[]), CAST(:apps AS text[]))
    AS claimed(id, clid, click, app)
LEFT JOIN ad_clicks AS click ON click.message_id = claimed.click
WHERE event.id = claimed.id AND status IN ('pending', 'unattributed');

-- _MARK[none]
UPDATE conversion_events AS event
SET status = 'unconfigured', last_error = 'no Meta setup for its click''s app (the apps file''s [app.meta])', sent_ctwa_clid = claimed.clid, click_message_id = claimed.click,
    click_source_id = click.source_id, click_person_key = click.person_key, click_app_id = claimed.app
FROM unnest(CAST(:ids AS bigint[]), CAST(:clids AS text[]), CAST(:clicks AS text[]), CAST(:apps AS text[]))
    AS claimed(id, clid, click, app)
LEFT JOIN ad_clicks AS click ON click.message_id = claimed.click
WHERE event.id = claimed.id AND status IN ('pending', 'unattributed');

-- _MARK_UNATTRIBUTED
UPDATE conversion_events
SET status = 'unattributed',
    next_attempt_at = now() + greatest(interval '1 minute', (now() - recorded_at) / 4),
    last_error = 'no click with a ctwa_clid within attribution_window() before event_time'
WHERE id = ANY(:ids) AND status IN ('pending', 'unattributed');

-- _RENEW
UPDATE conversion_events SET claimed_at = now() WHERE id = ANY(:ids) AND status = 'sending';

-- _RELEASE
UPDATE conversion_events SET status = 'pending', claimed_at = NULL,
    next_attempt_at = now() + make_interval(secs => :delay), last_error = :reason, error_code = :code,
    error_subcode = :subcode
WHERE id = ANY(:ids) AND status IN ('sending');

-- _SETTLE[Move(sources=('sending',), target='sent')]
UPDATE conversion_events SET status = 'sent', claimed_at = NULL, fbtrace_id = :trace,
    sent_at = now(), error_code = :code, error_subcode = :subcode,
    last_error = NULL
WHERE id = ANY(:ids) AND status IN ('sending');

-- _SETTLE[Move(sources=('sending',), target='failed')]
UPDATE conversion_events SET status = 'failed', claimed_at = NULL, fbtrace_id = :trace,
    sent_at = NULL, error_code = :code, error_subcode = :subcode,
    last_error = :reason
WHERE id = ANY(:ids) AND status IN ('sending');

-- _SETTLE[Move(sources=('sending',), target='unconfirmed')]
UPDATE conversion_events SET status = 'unconfirmed', claimed_at = NULL, fbtrace_id = :trace,
    sent_at = NULL, error_code = :code, error_subcode = :subcode,
    last_error = :reason
WHERE id = ANY(:ids) AND status IN ('sending');

-- _RECHECK
UPDATE conversion_events SET status = 'pending', next_attempt_at = now(), last_error = NULL
WHERE status IN ('unconfigured') AND (CAST(:default AS boolean) OR click_app_id = ANY(CAST(:own AS text[])));

-- _ANY_PENDING
SELECT EXISTS (SELECT FROM conversion_events WHERE status = 'pending' AND (sent_ctwa_clid IS NULL OR (
          coalesce(click_app_id, '') <> ALL(CAST(:held_apps AS text[]))
          AND NOT (CAST(:default_held AS boolean) AND coalesce(click_app_id, '') <> ALL(CAST(:own_apps AS text[])))
      )));

-- _NAME
INSERT INTO apps AS app (app_id, name)
SELECT * FROM unnest(CAST(:ids AS text[]), CAST(:names AS text[]))
ON CONFLICT (app_id) DO UPDATE SET name = EXCLUDED.name, updated_at = now()
WHERE app.name IS DISTINCT FROM EXCLUDED.name;

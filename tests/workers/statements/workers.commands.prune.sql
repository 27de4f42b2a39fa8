-- _COUNT
SELECT count(*) FROM callbacks WHERE received_at < :cutoff;

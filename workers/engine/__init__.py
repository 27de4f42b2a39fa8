"""The engine that turns callbacks into rows: the tables (`schema`), what each callback says (`facts`), and the
`store` that writes a batch — archive, projections, erasure, rollups — in one transaction. No broker in here."""

"""Conversions to Meta's Conversions API: recorded by the business in ``conversion_events``, sent exactly once."""

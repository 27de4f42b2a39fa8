"""The ``ctwa worker`` service: takes callbacks off the queue in batches, has the engine store them, acknowledges
after the commit, retries what may succeed later and dead-letters what never can."""

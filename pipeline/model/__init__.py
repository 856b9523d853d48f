"""The responder: cache, claims, cost budget, pacing, replicas and the HTTP client with retries."""

"""Railway: the API client, the log crawler and the integration's connection test."""

"""What the process runs on: settings, rate limits, the server secret, trusted proxies."""

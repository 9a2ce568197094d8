"""Webhook endpoints (CLI, world file) and Standard Webhooks signatures."""

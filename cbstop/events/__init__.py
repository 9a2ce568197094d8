"""The audit trail (CONTRACT 3.4): events recorded with every change, numbered in commit order,
listed by the API and fanned out to webhooks."""

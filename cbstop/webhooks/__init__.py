"""Webhooks (CONTRACT 3.5): the operator's endpoints, the Standard Webhooks signature, and the
delivery loop that POSTs each fanned-out event."""

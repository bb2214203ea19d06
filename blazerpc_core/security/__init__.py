"""Built-in security plugins: token authentication and per-client rate limiting.

Both are default plugins that stay out of the request path until configured.
"""

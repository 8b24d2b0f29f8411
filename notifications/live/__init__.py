"""Live push (issue 18): events to browsers and bots over WebSockets (Django Channels, the Redis
channel layer), served by uvicorn beside the HTTP server.

- events.py     the per-user event log (a bounded Redis stream per user: ids to resume from)
                and the fan-out to channel-layer groups, always after the commit
- listeners.py  the on-commit hooks that turn trade moves, chat messages, notifications, loan news
                and offer changes into events
- consumers.py  /ws/v1/live/ (browsers: session, origin checked) and /ws/v1/stream/ (bots: token
                or API key; the webhook bodies with ids)
- routing.py    the WebSocket URL table config/asgi.py serves
"""

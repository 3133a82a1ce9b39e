"""Service functions: plain functions taking a DB session and ids by keyword.

The web app, the API, notebooks and workers all call these; none of them talk SQL
themselves. Errors meant for users are :class:`~serving.services.errors.ServiceError`.

What a front end calls returns read models (frozen dataclasses, see `serving.views`), never
ORM rows, and checks who may do it. The few functions that still return a row
(`sessions.create_session`, `sessions.get_session`, `shares.create_share_link`,
`images.ingest_image`, `turns.submit_turn`, ...) are building blocks for other services,
for the workers and for tests that inspect what was stored.
"""

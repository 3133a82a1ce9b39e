"""Service functions: plain functions taking a DB session and ids by keyword.

The web app, the API, notebooks and workers all call these; none of them talk SQL
themselves. Errors meant for users are :class:`~serving.services.errors.ServiceError`.
"""

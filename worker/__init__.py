"""The serving layer: settings, the SQL record, the artefact store, services and job runners.

Both the web app and the Celery workers import this package; the embedded mode runs
the same job code in-process.
"""

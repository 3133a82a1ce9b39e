"""The Celery front end: tasks that run jobs through the serving core, and `medplib worker`.

A task takes a job id and calls :func:`serving.execution.run_job`; everything it reads and
writes goes through the core, the same code the embedded runner calls in-process.
"""

"""The serving core shared by both front ends (the Gradio web app and the Celery worker).

Settings, the database and its models, the artefact store, the services (the only place that
reads rows and checks roles), job execution and the runners that hand jobs to it.
"""

"""The Celery application for GPU workers.

Settings follow the known traps of Celery on GPUs: explicit queues, prefetch of one,
late acknowledgement with re-queue on worker loss (bounded by the job's attempts
counter), time limits below the Redis visibility timeout, and the model loaded once
per worker process after the fork. A beat entry runs the reconciler (dead workers' jobs,
lost messages) on the CPU queue: `medplib worker --queues cpu --beat` serves it.
"""

from __future__ import annotations

from celery import Celery
from kombu import Exchange, Queue

from serving.reconcile import watchdog_interval_s
from serving.settings import DEFAULT_QUEUE, Settings, checkpoint_queue

# The default checkpoint's queue; every other named checkpoint has ``gpu.<name>``.
INFERENCE_QUEUE = DEFAULT_QUEUE
CPU_QUEUE = "cpu"
INFERENCE_TASK = "medplib.run_inference"
RECONCILE_TASK = "medplib.reconcile"


def celery_config(settings: Settings) -> dict[str, object]:
    transport = {"visibility_timeout": settings.broker_visibility_timeout_s}
    every_s = watchdog_interval_s(settings.job_time_limit_s)
    gpu_queues = dict.fromkeys(settings.checkpoint_queues.values())
    return {
        "broker_url": settings.broker_url or "memory://",
        # The SQL row is the record of a job; Celery results are not used.
        "task_ignore_result": True,
        "result_backend": None,
        "broker_transport_options": transport,
        "result_backend_transport_options": transport,
        "visibility_timeout": settings.broker_visibility_timeout_s,
        # One queue per checkpoint: a worker loads one model and consumes its queue only.
        "task_queues": tuple(
            Queue(name, Exchange(name), routing_key=name) for name in [*gpu_queues, CPU_QUEUE]
        ),
        # A typo in a queue name is an error, not a new queue nobody consumes.
        "task_create_missing_queues": False,
        "task_default_queue": CPU_QUEUE,
        "task_routes": {
            # A job names its checkpoint's queue when published (`CeleryRunner.submit`);
            # this is where one sent without a queue goes.
            INFERENCE_TASK: {"queue": checkpoint_queue(settings.default_checkpoint)},
            RECONCILE_TASK: {"queue": CPU_QUEUE},
        },
        "beat_schedule": {
            "medplib-reconcile": {
                "task": RECONCILE_TASK,
                "schedule": every_s,
                # Unserved ticks expire instead of piling up while no CPU worker runs.
                "options": {"queue": CPU_QUEUE, "expires": every_s},
            }
        },
        "worker_prefetch_multiplier": 1,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "task_acks_on_failure_or_timeout": True,
        "worker_cancel_long_running_tasks_on_connection_loss": True,
        "task_soft_time_limit": settings.job_soft_time_limit_s,
        "task_time_limit": settings.job_time_limit_s,
        "worker_proc_alive_timeout": settings.worker_proc_alive_timeout_s,
        "task_serializer": "json",
        "accept_content": ["json"],
        "task_track_started": False,
        "broker_connection_retry_on_startup": True,
        "worker_hijack_root_logger": False,
        "worker_send_task_events": False,
    }


def create_celery(settings: Settings) -> Celery:
    app = Celery("medplib", include=["worker.tasks"])
    app.conf.update(celery_config(settings))
    return app

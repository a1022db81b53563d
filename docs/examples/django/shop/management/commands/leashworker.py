"""``python manage.py leashworker``: run the project's Leash worker.

It runs ``shop.tasks.worker`` until SIGTERM or Ctrl-C, which stop it
gracefully: it fetches no more jobs, lets running ones finish within the
grace (``--grace-s``, 25 s), releases the rest to their queues, and the
command exits 0. A second signal releases at once. The broker is
``settings.LEASH_URL``.
"""

from typing import Any

from django.core.management.base import BaseCommand, CommandParser


class Command(BaseCommand):
    help = "Run the project's Leash worker until SIGTERM (graceful) or a second signal (at once)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--concurrency", type=int, help="jobs at once (LEASH_CONCURRENCY)")
        parser.add_argument("--grace-s", type=float, default=25.0, help="time for running jobs")

    def handle(self, *args: Any, **options: Any) -> None:
        from shop.tasks import worker

        running = worker.with_options(
            concurrency=options["concurrency"], grace_s=options["grace_s"]
        )
        where = f"{running.host}:{running.port}"
        self.stdout.write(f"leash worker on {where}, queues {running.queues}")
        self.stdout.flush()
        running.run()  # until SIGTERM / Ctrl-C
        self.stdout.write(f"leash worker stopped ({running.unfinished} jobs unfinished)")

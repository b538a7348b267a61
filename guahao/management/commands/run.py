"""`guahao run`: the web server and the worker together, for one machine. Ctrl-C stops both."""

import os
import signal
import subprocess
import sys
import time

from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "启动 Web 服务（gunicorn）与后台 worker；Ctrl-C 同时停止"

    def add_arguments(self, parser):
        parser.add_argument("--bind", default=os.environ.get("GUAHAO_BIND", "127.0.0.1:8000"))
        parser.add_argument("--workers", type=int, default=int(os.environ.get("GUAHAO_WEB_WORKERS", "2")))

    def handle(self, *args, bind: str, workers: int, **options):
        python = sys.executable
        # No gunicorn access log: query strings may carry search terms; RequestIdMiddleware logs
        # each request as JSON with its path only.
        web = subprocess.Popen(
            [python, "-m", "gunicorn", "guahao.wsgi:application", "--bind", bind,
             "--workers", str(workers), "--threads", "4"],
        )
        worker = subprocess.Popen([python, "-m", "guahao.cli", "worker"])
        children = [web, worker]
        self.stdout.write(f"guahao: http://{bind}/  (API docs: http://{bind}/api/v1/docs)  Ctrl-C to stop")

        def stop(*_):
            for child in children:
                if child.poll() is None:
                    child.send_signal(signal.SIGTERM)

        # Both signals stop both children, also where SIGINT arrives ignored (a background job).
        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        try:
            while all(child.poll() is None for child in children):
                time.sleep(0.5)
        finally:
            stop()
            for child in children:
                try:
                    child.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    child.kill()
        failed = [c.returncode for c in children if c.returncode not in (0, -signal.SIGTERM, -signal.SIGINT)]
        if failed:
            sys.exit(1)

"""`guahao run`: the web server and the worker together, for one machine. Ctrl-C stops both."""

import os
import signal
import subprocess
import sys
import time

from django.core.management.base import BaseCommand, CommandError

# gunicorn's gthread worker queues accepted connections in front of its thread pool, where Django
# cannot see them; admission control (guahao/admission.py) only answers 429 at once when spare
# threads take requests off that queue while the ADMISSION_ACTIVE permits are all taken. Hence
# many more threads (mostly idle or refusing) than permits.
WEB_THREADS = "16"
# Open connections per worker process (keep-alive ones included) before it stops accepting: 2,000
# clients against 2 processes fit without waiting in the kernel's backlog.
WORKER_CONNECTIONS = "1000"
BACKLOG = "2048"  # the kernel caps it at net.core.somaxconn
# Longer than nginx's upstream keepalive_timeout (60 s), so gunicorn never closes a connection
# nginx is about to reuse (nginx would answer 502 or resend the request elsewhere).
KEEP_ALIVE = "75"


class Command(BaseCommand):
    help = "启动 Web 服务（gunicorn）与后台 worker；Ctrl-C 同时停止"

    def add_arguments(self, parser):
        parser.add_argument("--bind", default=os.environ.get("GUAHAO_BIND", "127.0.0.1:8000"))
        parser.add_argument("--workers", type=int, default=int(os.environ.get("GUAHAO_WEB_WORKERS", "2")))
        parser.add_argument("--threads", type=int, default=int(os.environ.get("GUAHAO_WEB_THREADS", WEB_THREADS)))
        parser.add_argument(
            "--his-simulator",
            metavar="HOST:PORT",
            default="",
            help="（仅开发模式）同时启动 HIS 模拟器，并让示范市第二人民医院（HISDEMO）通过它锁号、挂号",
        )

    def handle(self, *args, bind: str, workers: int, threads: int, his_simulator: str = "", **options):
        python = sys.executable
        children: list[subprocess.Popen] = []
        sandbox = self._start_payment_sandbox(python)
        if sandbox is not None:
            children.append(sandbox)
        wechat = self._start_wechat_simulator(python)
        if wechat is not None:
            children.append(wechat)
        if his_simulator:
            children.append(self._start_his_demo(python, his_simulator, bind))
        # No gunicorn access log: query strings may carry search terms; RequestIdMiddleware logs
        # each request as JSON with its path only. The config module only adds the metrics hook.
        # No control socket: gunicorn's default lives at one path in the home directory, which
        # several servers on one machine (N processes behind nginx) would fight over.
        env = self._metrics_env()
        self._warn_without_spare_threads(threads)
        web = subprocess.Popen(
            [python, "-m", "gunicorn", "guahao.wsgi:application", "-c", "python:guahao.gunicorn_conf",
             "--bind", bind, "--workers", str(workers), "--threads", str(threads),
             "--worker-connections", WORKER_CONNECTIONS, "--backlog", BACKLOG, "--keep-alive", KEEP_ALIVE,
             "--no-control-socket"],
            env=env,
        )
        worker = subprocess.Popen([python, "-m", "guahao.cli", "worker"], env=env)
        children += [web, worker]
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

    def _warn_without_spare_threads(self, threads: int) -> None:
        from django.conf import settings

        active = settings.ADMISSION_ACTIVE
        if active > 0 and threads <= active:
            self.stderr.write(
                f"GUAHAO_WEB_THREADS={threads} is not above GUAHAO_ADMISSION_ACTIVE={active}: in a burst "
                "requests wait in gunicorn's queue instead of getting 429 at once (see docs/deployment.md)"
            )

    def _metrics_env(self) -> dict[str, str]:
        """The web workers and the worker write their metrics into one directory, emptied now: a
        previous run's counts would be added to this one's (prometheus_client multiprocess mode)."""
        import shutil

        from django.conf import settings

        directory = settings.VAR_DIR / "prometheus"
        shutil.rmtree(directory, ignore_errors=True)
        directory.mkdir(parents=True)
        return {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(directory)}

    def _start_payment_sandbox(self, python: str) -> subprocess.Popen | None:
        """In development, the payment providers' sandbox gateway (WeChat Pay v3 and Alipay on the
        wire) at GUAHAO_PAY_SANDBOX_URL: hospitals without a merchant account pay through it."""
        from urllib.parse import urlsplit

        from django.conf import settings

        from guahao.environment import DEVELOPMENT

        if settings.ENV != DEVELOPMENT or not settings.PAY_SANDBOX_URL:
            return None
        address = urlsplit(settings.PAY_SANDBOX_URL)
        gateway = subprocess.Popen(
            [python, "-m", "guahao.payments.sandbox", "--host", address.hostname or "127.0.0.1",
             "--port", str(address.port or 9200), "--keys", str(settings.PAY_SANDBOX_KEYS),
             "--state", str(settings.VAR_DIR / "pay-sandbox-state.json"),
             # As WeChat Pay does now and then: a copy with a wrong signature, which we must refuse.
             "--probe-rate", "0.05"],
        )
        self.stdout.write(f"支付沙箱（微信支付 v3、支付宝）：{settings.PAY_SANDBOX_URL}")
        return gateway

    def _start_wechat_simulator(self, python: str) -> subprocess.Popen | None:
        """In development, the WeChat simulator (OAuth, access tokens, template messages) that the
        demo hospital's 公众号 points at (guahao demo sets it up)."""
        from urllib.parse import urlsplit

        from django.conf import settings

        from guahao.environment import DEVELOPMENT

        if settings.ENV != DEVELOPMENT or not settings.WECHAT_SIMULATOR_URL:
            return None
        address = urlsplit(settings.WECHAT_SIMULATOR_URL)
        simulator = subprocess.Popen(
            [python, "-m", "guahao.wechat.simulator", "--host", address.hostname or "127.0.0.1",
             "--port", str(address.port or 9300), "--state", str(settings.VAR_DIR / "wechat-simulator.json")],
        )
        self.stdout.write(f"微信公众号模拟器：{settings.WECHAT_SIMULATOR_URL}/_control/messages")
        return simulator

    def _start_his_demo(self, python: str, address: str, bind: str) -> subprocess.Popen:
        """The HIS simulator as a child process, and the HIS demo hospital synced from it."""
        from django.conf import settings

        from guahao.environment import DEVELOPMENT
        from guahao.his import demo

        if settings.ENV != DEVELOPMENT:
            raise CommandError("--his-simulator 仅用于开发模式")
        simulator = subprocess.Popen(
            [python, "-m", "guahao.his.simulator", "--bind", address, "--hospital", demo.CODE,
             "--secret", demo.SECRET, "--seed", "demo", "--attendance", "0.3"],
        )
        try:
            hospital, report = demo.start_demo_hospital(base_url=f"http://{address}")
        except Exception:
            simulator.kill()
            raise
        self.stdout.write(
            f"HIS 模拟器：http://{address}/_control/state ；{hospital.name}：新放号排班 {len(report.released)} 个，"
            f"患者页面 http://{bind}/?hospital={hospital.pk}"
        )
        return simulator

import os
import socket

from django.core.management.base import BaseCommand

from guahao.worker import run_forever, run_once


class Command(BaseCommand):
    help = "后台任务：处理事件外发箱、支付沙箱通知、超时锁号清理"

    def add_arguments(self, parser):
        parser.add_argument("--once", action="store_true", help="只运行一轮后退出")

    def handle(self, *args, once: bool = False, **options):
        worker_id = f"{socket.gethostname()}-{os.getpid()}"
        if once:
            self.stdout.write(f"{run_once(worker_id=worker_id)} items processed")
            return
        run_forever(worker_id=worker_id)

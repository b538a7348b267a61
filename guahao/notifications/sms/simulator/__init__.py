"""Aliyun's 短信服务 SendSms as a separate process, for tests and development: it checks requests
the way the provider does (access key, timestamp ±15 minutes, the RPC signature, nonce reuse, sign
name, template and its variables, the phone number, per-phone rate limits), answers in the
provider's JSON and error codes, records what it sent, and fails on demand (timeout, 5xx,
throttling) through an unsigned control endpoint under /_control/ (loopback only).

    python -m guahao.notifications.sms.simulator --host 127.0.0.1 --port 9400 \\
        --keys '{"LTAI-dev": "dev-secret"}' --state var/sms-simulator.json

Standard library only (no Django, no database). Tests use guahao.notifications.sms.testing.
"""

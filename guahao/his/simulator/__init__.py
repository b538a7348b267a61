"""A hospital's HIS as a separate process, for tests and demos: it implements the gateway contract
(docs/his.md, docs/his-gateway.openapi.yaml) with its own inventory, locks that lapse on its side,
registration numbers of its own and check-in/visit events, and fails on demand per operation
through an unsigned control endpoint under /_control/.

    python -m guahao.his.simulator --bind 127.0.0.1:9100 --hospital DEMO --secret …
    guahao his-simulator …                  (the same, as a management command)

Standard library only (no Django, no database), so it starts in a fraction of a second. Tests use
`guahao.his.simulator.process.running_simulator()`.
"""

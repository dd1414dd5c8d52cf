"""The HTTP baseline of scripts/bench_decide.py: a Flask app that answers every POST with `{}`.

Served by gunicorn with the same settings as `tactful serve` (sync workers), it measures what
Flask + gunicorn + the loopback cost on their own, so the decide endpoint can be compared with it:

    .venv/bin/gunicorn -w 2 -k sync -b 127.0.0.1:8001 --chdir scripts _empty_app:app
"""
from flask import Flask, jsonify

app = Flask("empty")


@app.post("/", defaults={"path": ""})
@app.post("/<path:path>")
def empty(path: str):
    return jsonify({})

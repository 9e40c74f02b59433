"""Canary secrets of each type, planted in a workspace to prove none gets through."""

from __future__ import annotations

from pathlib import Path

PEM_BODY = (
    "MIIEowIBAAKCAQEA7bq98TXqL3cJ2vYh2mKq0r4JZ8pN5nWb1QeVxGk3sT9uRfYd\n"
    "Lw8Hc6Ea0jP2mBv4ZtXo1sKdQ7yUe5RgN3fWcJ9hVbT2kLxM6qAiO8pS4rEzYw1u\n"
)
CANARIES: dict[str, str] = {
    "aws_access_key": "AKIAQ3EGRWKZ5XVN7TUP",
    "github_token": "ghp_R8fK2mLq9ZxV4tN7bC1wY6pH3sJ5dG0aE2iU",
    "slack_token": "xoxb-2648823917-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx",
    "private_key": PEM_BODY.splitlines()[0],
    "url_password": "Sup3rS3cretPw0rd",
    "config_password": "hunter2-Correct-Horse-Battery",
    "jwt": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
    "high_entropy": "9fG3kLq2ZxP8vR7mN1tY4wB6cH0jD5sU2eA8iO3lK7nQ",
}


def plant(root: Path) -> dict[str, str]:
    """Write files holding every canary; returns the canaries (type → secret text)."""
    files = {
        "src/settings.py": (
            '"""Service settings."""\n\n'
            f'AWS_ACCESS_KEY_ID = "{CANARIES["aws_access_key"]}"\n'
            f'GITHUB = "{CANARIES["github_token"]}"\n\n\n'
            "def connect():\n"
            f'    return "postgres://admin:{CANARIES["url_password"]}@db.internal:5432/app"\n'
        ),
        "config/app.ini": f"[db]\nhost = db.internal\npassword = {CANARIES['config_password']}\n",
        "deploy/notify.sh": f"#!/bin/sh\nexport SLACK_BOT={CANARIES['slack_token']}\ncurl https://slack.example\n",
        "keys/server.pem": (
            "-----BEGIN RSA PRIVATE KEY-----\n" + PEM_BODY + "-----END RSA PRIVATE KEY-----\n"
        ),
        "docs/auth.md": f"# Auth\n\nSample session:\n\n    {CANARIES['jwt']}\n",
        "config/blob.yaml": f"name: cache\nblob: {CANARIES['high_entropy']}\n",
        "src/clean.py": "def add(a, b):\n    return a + b\n",
    }
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return dict(CANARIES)


def leaked(blob: bytes | str) -> list[str]:
    """Which canaries occur in ``blob`` (raw bytes of a file, a database, output)."""
    data = blob.encode() if isinstance(blob, str) else blob
    return [kind for kind, secret in CANARIES.items() if secret.encode() in data]

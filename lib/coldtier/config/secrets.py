"""Secrets in output: which config keys hold secrets, and masking them in any text."""

from __future__ import annotations

import re

_SECRET_KEYS = ("password", "secret", "key", "token", "dsn")


def is_secret_key(key: str) -> bool:
    k = key.lower()
    return any(s in k for s in _SECRET_KEYS) and not k.endswith("_env")


def dsn_password(dsn: str) -> str:
    m = re.search(r"password=(\S+)", dsn) or re.search(r"://[^:/@]+:([^@]+)@", dsn)
    return m.group(1) if m else ""


# a value after a password-like key (``password=…``, ``"token": "…"``) or a URL's user:password@
_KEYED_SECRET = re.compile(r"(?i)((?:password|passwd|secret|token|credential)[\w.-]*(?:=|[\"']:\s*[\"']))"
                           r"(?!\*\*\*)[^\s,;&'\"}]+")
_URL_PASSWORD = re.compile(r"(://[^:/@\s]+:)[^@\s/]+(@)")


def mask(text: str, secrets: tuple[str, ...]) -> str:
    """Hide secrets in ``text``: any value after a password-like key or in a URL's
    ``user:password@``, and each of ``secrets`` where it stands as a whole value (not inside a
    longer word or path). ``AppConfig.secrets`` leaves out values equal to names coldtier prints,
    which masking could only garble."""
    text = _KEYED_SECRET.sub(r"\1***", text)
    text = _URL_PASSWORD.sub(r"\1***\2", text)
    for s in sorted(set(secrets), key=len, reverse=True):
        if s:
            text = re.sub(rf"(?<![\w./-]){re.escape(s)}(?![\w-])", "***", text)
    return text

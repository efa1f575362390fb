"""Who is using the app: sign-in, the lead role, and a sign-in that survives a page reload.

A reload starts a new Streamlit session, so the signed-in name is also kept in a cookie. The
cookie holds the role, the name and the time of sign-in, signed with a secret that lives in the
server process only (HMAC-SHA256): it cannot be forged from the browser, and a server restart
signs everyone out (their verdicts and leases stay in the store). The cookie is scoped to the
app's port, set with ``SameSite=Strict``, and cleared on sign-out.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import time
from dataclasses import dataclass

import streamlit as st

from app.annotate.launch import AnnotateConfig

SESSION_HOURS = 12
ANNOTATOR, LEAD = "annotator", "lead"


@dataclass(frozen=True)
class User:
    name: str
    role: str  # ANNOTATOR or LEAD

    @property
    def is_lead(self) -> bool:
        return self.role == LEAD


@st.cache_resource(show_spinner=False)
def _server_secret() -> bytes:
    """A random key made once per server process."""
    return secrets.token_bytes(32)


def cookie_name(config: AnnotateConfig) -> str:
    return f"hardood_session_{config.port}"


def make_token(user: User, issued: float | None = None, secret: bytes | None = None) -> str:
    """``payload.signature``, both URL-safe base64, for the session cookie."""
    payload = json.dumps(
        {
            "role": user.role,
            "name": user.name,
            "at": round(time.time() if issued is None else issued),
        }
    ).encode()
    signature = hmac.new(secret or _server_secret(), payload, hashlib.sha256).digest()
    encode = base64.urlsafe_b64encode
    return f"{encode(payload).decode()}.{encode(signature).decode()}"


def read_token(token: str, now: float | None = None, secret: bytes | None = None) -> User | None:
    """The user a valid, unexpired token names, else None."""
    try:
        payload_b64, signature_b64 = token.split(".", 1)
        payload = base64.urlsafe_b64decode(payload_b64)
        signature = base64.urlsafe_b64decode(signature_b64)
    except (ValueError, TypeError):
        return None
    expected = hmac.new(secret or _server_secret(), payload, hashlib.sha256).digest()
    if not hmac.compare_digest(signature, expected):
        return None
    data = json.loads(payload)
    now = time.time() if now is None else now
    if not 0 <= now - data["at"] <= SESSION_HOURS * 3600 or data["role"] not in (ANNOTATOR, LEAD):
        return None
    return User(data["name"], data["role"])


def role_for_password(config: AnnotateConfig, password: str, environ=os.environ) -> str | None:
    """The role this password grants, or None when it grants nothing.

    The lead's password makes a lead. Otherwise the team password is needed when one is set;
    without one (a local app) anyone who leaves the password empty is an annotator.
    """
    given = password.encode()

    def matches(env: str | None) -> bool:
        expected = environ.get(env, "") if env else ""
        return bool(expected) and hmac.compare_digest(given, expected.encode())

    if matches(config.lead_password_env):
        return LEAD
    if matches(config.password_env) or (config.password_env is None and not password):
        return ANNOTATOR
    return None


def restore(config: AnnotateConfig) -> User | None:
    """The signed-in user of this session, or of this browser's cookie after a reload."""
    user = st.session_state.get("user")
    if user is not None or st.session_state.get("signed_out"):
        return user
    token = st.context.cookies.get(cookie_name(config))
    user = read_token(token) if token else None
    if user is not None:
        st.session_state.user = user
    return user


def remember(config: AnnotateConfig, user: User) -> None:
    """Set the session cookie in the browser (drawn once, in a hidden container)."""
    token = make_token(user)
    with st.container(key="session_cookie"):
        st.html(
            "<script>document.cookie = "
            f"'{cookie_name(config)}={token}; path=/; max-age={SESSION_HOURS * 3600}; "
            "SameSite=Strict';</script>",
            unsafe_allow_javascript=True,
        )


def forget(config: AnnotateConfig) -> None:
    """Clear the session cookie in the browser."""
    with st.container(key="session_cookie"):
        st.html(
            f"<script>document.cookie = '{cookie_name(config)}=; path=/; max-age=0; "
            "SameSite=Strict';</script>",
            unsafe_allow_javascript=True,
        )

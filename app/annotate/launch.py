"""``hardood annotate``: serve the review app (``app/annotate/streamlit_app.py``) for a curation store.

    hardood annotate --db curation.db [--host 127.0.0.1] [--port 8501] [--password-env VAR]
                     [--lead-password-env VAR] [--lease-seconds 300] [--overlap 1]
                     [--grid-size 12] [--dwell-seconds 1] [--guidelines FILE] [--hide-scores]
                     [--image-root DIR ...] [--export-dir DIR] [--gold-share 0.05]

Streamlit runs headless, without usage statistics or opening a browser, on localhost unless told
otherwise. Listening beyond localhost needs ``--password-env VAR``: the team's shared password is
read from that environment variable (never from the command line, where ``ps`` would show it).
The lead signs in with the password in ``--lead-password-env``. Images are served from the roots
registered in the store (whoever can write the store decides what the app may show);
``--image-root`` narrows that to an allow-list.
This module stays free of Streamlit imports so the CLI starts fast; the app parses the same
arguments with ``parse_app_args``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from wood_train.config import add_config_args, config_field, overrides_from_args, replace
from wood_train.errors import ConfigError, MissingInputError

APP_SCRIPT = Path(__file__).with_name("streamlit_app.py")
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
MAX_GRID_SIZE = 48


@dataclass(frozen=True)
class AnnotateConfig:
    """How the review app serves one store."""

    db: Path | None = config_field(None, "curation store (SQLite), required")
    host: str = config_field("127.0.0.1", "address to listen on")
    port: int = config_field(8501, "port to listen on")
    password_env: str | None = config_field(
        None, "environment variable holding the team password (required off localhost)"
    )
    lease_seconds: float = config_field(300.0, "how long an item stays reserved for its annotator")
    overlap: int = config_field(1, "independent verdicts per item (k)")
    grid_size: int = config_field(12, "thumbnails per grid page")
    export_dir: Path = config_field(
        Path("data_manifests"), "folder the app's Export button writes to"
    )
    lead_password_env: str | None = config_field(
        None, "environment variable holding the lead's password (sign in with it to lead)"
    )
    dwell_seconds: float = config_field(
        1.0, "Enter (grid) and n (single view) do nothing until a page has been shown this long"
    )
    guidelines: Path | None = config_field(
        None, "Markdown file of labelling guidelines shown to annotators (may show images)"
    )
    hide_scores: bool = config_field(
        False, "hide the model's scores, reasons and CAMs from annotators (the lead can switch it)"
    )
    image_roots: tuple[Path, ...] = config_field(
        (),
        "serve images only from these folders (default: every root registered in the store)",
        flag="--image-root",
    )
    gold_share: float = config_field(
        0.0,
        "share of each annotator's items that are gold checks: images with a known answer (marked "
        "gold by the lead, or loaded from a truth), scored against it and never counted as votes",
    )


def is_local_host(host: str) -> bool:
    return host.strip("[]") in LOCAL_HOSTS


def check_config(config: AnnotateConfig, environ: dict[str, str] | None = None) -> None:
    """Raise a user-facing error if the app must not start with this config."""
    environ = os.environ if environ is None else environ
    if config.db is None:
        raise ConfigError("--db is required: the curation store to review")
    if not Path(config.db).is_file():
        raise MissingInputError(f"curation database not found: {config.db} (run `hardood mine`)")
    if config.password_env is None and not is_local_host(config.host):
        raise ConfigError(
            f"refusing to listen on {config.host} without a password: anyone who can reach it "
            "could label images. Pass --password-env VAR (VAR holding the team password) or "
            "keep --host 127.0.0.1"
        )
    if config.password_env is not None and not environ.get(config.password_env):
        raise ConfigError(
            f"--password-env {config.password_env}: that environment variable is not set or empty"
        )
    if config.overlap < 1:
        raise ConfigError(f"--overlap must be at least 1, got {config.overlap}")
    if not 1 <= config.grid_size <= MAX_GRID_SIZE:
        raise ConfigError(
            f"--grid-size must be between 1 and {MAX_GRID_SIZE}, got {config.grid_size}"
        )
    if not config.lease_seconds > 0:
        raise ConfigError(f"--lease-seconds must be positive, got {config.lease_seconds}")
    if not 0 < config.port < 65536:
        raise ConfigError(f"--port must be between 1 and 65535, got {config.port}")
    if config.lead_password_env is not None and not environ.get(config.lead_password_env):
        raise ConfigError(
            f"--lead-password-env {config.lead_password_env}: that environment variable is not "
            "set or empty"
        )
    if not 0 <= config.dwell_seconds <= 10:
        raise ConfigError(f"--dwell-seconds must be between 0 and 10, got {config.dwell_seconds}")
    if config.guidelines is not None and not Path(config.guidelines).is_file():
        raise MissingInputError(
            f"--guidelines {config.guidelines}: no such file (a Markdown file of guidelines)"
        )
    if not 0 <= config.gold_share < 1:
        raise ConfigError(f"--gold-share must be in [0, 1), got {config.gold_share}")
    for root in config.image_roots:
        if not Path(root).is_dir():
            raise MissingInputError(f"--image-root {root}: no such folder")


def app_arguments(config: AnnotateConfig) -> list[str]:
    """The script arguments that rebuild ``config`` inside the app (``parse_app_args``)."""
    args = [
        "--db", str(Path(config.db).resolve()),
        "--host", config.host,
        "--port", str(config.port),
        "--lease-seconds", str(config.lease_seconds),
        "--overlap", str(config.overlap),
        "--grid-size", str(config.grid_size),
        "--export-dir", str(Path(config.export_dir).resolve()),
    ]  # fmt: skip
    args += ["--dwell-seconds", str(config.dwell_seconds)]
    args += ["--gold-share", str(config.gold_share)]
    args += ["--hide-scores" if config.hide_scores else "--no-hide-scores"]
    if config.password_env is not None:
        args += ["--password-env", config.password_env]
    if config.lead_password_env is not None:
        args += ["--lead-password-env", config.lead_password_env]
    if config.guidelines is not None:
        args += ["--guidelines", str(Path(config.guidelines).resolve())]
    if config.image_roots:
        args += ["--image-root", *(str(Path(root).resolve()) for root in config.image_roots)]
    return args


def streamlit_command(config: AnnotateConfig) -> list[str]:
    """``python -m streamlit run app/annotate/streamlit_app.py <server options> -- <app arguments>``."""
    options = {
        "server.address": config.host,
        "server.port": str(config.port),
        "server.headless": "true",
        "browser.gatherUsageStats": "false",
        "server.fileWatcherType": "none",
        "server.runOnSave": "false",
        "client.toolbarMode": "minimal",
        # Streamlit's default accent is red, which the app keeps for "contains a foreground class"
        "theme.primaryColor": "#374151",
        # tracebacks stay in the server log when others can reach the app
        "client.showErrorDetails": "full" if is_local_host(config.host) else "type",
    }
    command = [sys.executable, "-m", "streamlit", "run", str(APP_SCRIPT)]
    for name, value in options.items():
        command += [f"--{name}", value]
    if is_local_host(config.host):  # refuse other Host headers: no DNS rebinding onto localhost
        for host in LOCAL_HOSTS:
            command += ["--server.allowedHosts", host]
    return command + ["--", *app_arguments(config)]


def _parser(prog: str = "streamlit_app.py") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description="the review app's own arguments")
    add_config_args(parser, AnnotateConfig)
    return parser


def parse_app_args(argv: list[str]) -> AnnotateConfig:
    """Parse the app's arguments (those after ``--`` of ``streamlit run``)."""
    args = _parser().parse_args(argv)
    return replace(AnnotateConfig(), **overrides_from_args(args, AnnotateConfig))


def launch(config: AnnotateConfig) -> int:
    """Record the team's overlap in the store, then run the app in the foreground until Ctrl+C;
    returns Streamlit's exit status."""
    check_config(config)
    # imported here so that `hardood annotate --help` stays light
    from curate import store
    from curate.review.leases import set_review_overlap

    with store.connect(store.open_existing(config.db)) as conn:  # `hardood export` reads it
        set_review_overlap(conn, config.overlap)
    root = str(Path(__file__).resolve().parents[2])  # so the script imports app, curate, wood_train
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))
    )
    print(
        f"hardood annotate: reviewing {config.db} at http://{config.host}:{config.port} "
        "(Ctrl+C stops; every verdict is already saved)",
        flush=True,
    )
    return subprocess.run(streamlit_command(config), env=env).returncode

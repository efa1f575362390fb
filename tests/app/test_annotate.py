"""``hardood annotate``: config checks, the Streamlit command line, and the drawn CAM overlay."""

from __future__ import annotations

import base64
import io
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from app.annotate import launch as annotate
from app.annotate.images import fit, overlay_cam, render, zoom_factor
from app.annotate.launch import AnnotateConfig, check_config, parse_app_args, streamlit_command
from app.cli import parse_args
from curate import store
from curate.review.leases import review_overlap


@pytest.fixture
def db(tmp_path):
    path = tmp_path / "c.db"
    path.write_bytes(b"")
    return path


def test_check_config_refuses_unsafe_or_broken_settings(db, tmp_path):
    check_config(AnnotateConfig(db=db))  # localhost without a password is fine
    cases = [
        (AnnotateConfig(), "--db is required"),
        (AnnotateConfig(db=tmp_path / "none.db"), "not found"),
        (AnnotateConfig(db=db, host="0.0.0.0"), "refusing to listen on 0.0.0.0"),
        (AnnotateConfig(db=db, host="192.168.1.5"), "--password-env VAR"),
        (AnnotateConfig(db=db, password_env="HARDOOD_TEST_PW"), "not set or empty"),
        (AnnotateConfig(db=db, overlap=0), "--overlap"),
        (AnnotateConfig(db=db, grid_size=0), "--grid-size"),
        (AnnotateConfig(db=db, lease_seconds=0), "--lease-seconds"),
        (AnnotateConfig(db=db, lead_password_env="HARDOOD_TEST_LEAD"), "--lead-password-env"),
        (AnnotateConfig(db=db, dwell_seconds=-1), "--dwell-seconds"),
        (AnnotateConfig(db=db, guidelines=tmp_path / "none.md"), "--guidelines"),
        (AnnotateConfig(db=db, image_roots=(tmp_path / "nowhere",)), "--image-root"),
        (AnnotateConfig(db=db, gold_share=1.0), "--gold-share"),
        (AnnotateConfig(db=db, gold_share=-0.1), "--gold-share"),
    ]
    for config, message in cases:
        with pytest.raises((ValueError, FileNotFoundError), match=message):
            check_config(config, environ={})
    check_config(AnnotateConfig(db=db, host="0.0.0.0", password_env="PW"), environ={"PW": "x"})


def test_streamlit_command_is_headless_private_and_round_trips_the_config(db):
    guide = db.with_name("guide.md")
    guide.write_text("# Guide")
    config = AnnotateConfig(
        db=db, port=8600, overlap=2, grid_size=8, lease_seconds=60, dwell_seconds=0.5,
        guidelines=guide, hide_scores=True, image_roots=(db.parent,), gold_share=0.1,
    )  # fmt: skip
    command = streamlit_command(config)
    assert command[1:4] == ["-m", "streamlit", "run"] and command[4].endswith("streamlit_app.py")
    options = command[: command.index("--")]
    pairs = list(zip(options[5::2], options[6::2]))
    for pair in [
        ("--server.headless", "true"),
        ("--browser.gatherUsageStats", "false"),
        ("--server.address", "127.0.0.1"),
        ("--server.port", "8600"),
        ("--server.allowedHosts", "localhost"),
    ]:
        assert pair in pairs
    rebuilt = parse_app_args(command[command.index("--") + 1 :])
    assert rebuilt == AnnotateConfig(
        db=db.resolve(), port=8600, overlap=2, grid_size=8, lease_seconds=60.0,
        export_dir=Path("data_manifests").resolve(), dwell_seconds=0.5,
        guidelines=guide.resolve(), hide_scores=True, image_roots=(db.parent.resolve(),),
        gold_share=0.1,
    )  # fmt: skip
    open_config = AnnotateConfig(db=db, host="0.0.0.0", password_env="PW", lead_password_env="LEAD")
    open_command = streamlit_command(open_config)
    assert "--server.allowedHosts" not in open_command
    assert open_command[-4:] == ["--password-env", "PW", "--lead-password-env", "LEAD"]
    assert parse_app_args(open_command[open_command.index("--") + 1 :]).hide_scores is False


def test_cli_runs_streamlit_with_the_package_importable(db, monkeypatch, capsys):
    seen = {}

    def fake_run(command, env):
        seen.update(command=command, env=env)
        return subprocess.CompletedProcess(command, 0)

    monkeypatch.setattr(annotate.subprocess, "run", fake_run)
    args = parse_args(["annotate", "--db", str(db), "--port", "8700", "--overlap", "3"])
    assert args.func(args) == 0
    assert "--overlap" in seen["command"] and "3" in seen["command"]
    with store.connect(db) as conn:  # recorded for `hardood export`
        assert review_overlap(conn) == 3
    repo_root = str(Path(annotate.__file__).resolve().parents[2])
    assert seen["env"]["PYTHONPATH"].split(":")[0] == repo_root
    assert "http://127.0.0.1:8700" in capsys.readouterr().out
    args = parse_args(["annotate", "--db", str(db), "--host", "0.0.0.0"])
    with pytest.raises(ValueError, match="without a password"):
        args.func(args)


def test_cam_overlay_colours_the_hot_region_with_the_chosen_opacity():
    gray = np.full((60, 80, 3), 128, dtype=np.uint8)
    heatmap = np.zeros((16, 16), dtype=np.uint8)
    heatmap[8:] = 255  # hot bottom half
    out = np.asarray(overlay_cam(fit(gray, 960), heatmap, 0.5)).astype(int)
    assert out.shape == (60, 80, 3)
    top, bottom = out[5, 40], out[55, 40]
    assert bottom[0] > bottom[2] + 40  # red where the CAM is high
    assert top[2] > top[0] + 40  # blue where it is low
    assert (np.asarray(overlay_cam(fit(gray, 960), heatmap, 0.0)) == gray).all()  # image only
    full = np.asarray(overlay_cam(fit(gray, 960), heatmap, 1.0)).astype(int)
    assert tuple(full[55, 40]) == (128, 0, 0) and tuple(full[5, 40]) == (0, 0, 128)  # CAM only
    assert fit(gray, 40).size == (40, 30) and fit(gray, 960).size == (80, 60)  # never upscaled


def test_small_images_travel_at_their_own_pixels_and_large_ones_are_scaled_down():
    small = np.zeros((48, 64, 3), dtype=np.uint8)
    small[::2, ::2] = 255  # a checkerboard that any smoothing would grey out
    shown = render(small, 320)
    assert zoom_factor((64, 48), 320) == 5 and (shown.width, shown.height) == (320, 240)
    assert shown.pixelated and shown.uri.startswith("data:image/png;base64,")
    png = Image.open(io.BytesIO(base64.b64decode(shown.uri.split(",", 1)[1])))
    assert (np.asarray(png) == small).all()  # lossless and at its own size
    large = render(np.full((600, 800, 3), 90, dtype=np.uint8), 320)
    assert not large.pixelated and (large.width, large.height) == (320, 240)
    assert large.uri.startswith("data:image/jpeg;base64,")

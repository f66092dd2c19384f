"""``simulate`` and ``replay`` from the command line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from simulators.cli import app
from simulators.framefile import read_frame_file
from simulators.truth import TruthRecord
from tests.security.conftest import Client, SecuredBroker, ingest_login, wait_for
from tests.simulators.test_publisher import subscribed


def test_simulate_to_a_file_with_keys_and_truth(tmp_path: Path) -> None:
    out, keys, truth = tmp_path / "run.frames", tmp_path / "kits.json", tmp_path / "truth.npz"
    result = CliRunner().invoke(
        app,
        [
            "simulate",
            "--bikes",
            "3",
            "--minutes",
            "10",
            "--seed",
            "4",
            "--faults",
            "typical,duplicate=0.2",
            "--out",
            str(out),
            "--keys-out",
            str(keys),
            "--truth-out",
            str(truth),
            "--start",
            "2026-06-15T09:00+02:00",
        ],
    )
    assert result.exit_code == 0, result.output
    pubs = list(read_frame_file(out))
    kits = json.loads(keys.read_text())
    assert len(kits) == 3
    assert all(len(bytes.fromhex(k["key"])) == 32 for k in kits)
    record = TruthRecord.load(truth)
    assert record.summary()["frames_duplicated"] > 0
    assert pubs[0].publish_ms >= 1_781_506_800_000
    # Same options, same file.
    again = tmp_path / "again.frames"
    CliRunner().invoke(
        app,
        [
            "simulate",
            "--bikes",
            "3",
            "--minutes",
            "10",
            "--seed",
            "4",
            "--faults",
            "typical,duplicate=0.2",
            "--out",
            str(again),
            "--start",
            "2026-06-15T09:00+02:00",
        ],
    )
    assert again.read_bytes() == out.read_bytes()


def test_bad_options_are_reported(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["simulate", "--faults", "sometimes", "--out", str(tmp_path / "f")])
    assert result.exit_code != 0
    assert "sometimes" in result.output
    result = runner.invoke(app, ["simulate", "--speed", "warp", "--out", str(tmp_path / "f")])
    assert result.exit_code != 0
    assert "speed" in result.output


@pytest.mark.mqtt
def test_simulate_and_replay_over_mqtt(
    tmp_path: Path, mqtt_url: str, unique_topic_prefix: str
) -> None:
    root = f"{unique_topic_prefix}/bikesense/v1"
    out = tmp_path / "run.frames"
    with subscribed(mqtt_url, f"{root}/kits/+/up") as sub:
        result = CliRunner().invoke(
            app,
            [
                "simulate",
                "--bikes",
                "2",
                "--minutes",
                "5",
                "--out",
                str(out),
                "--mqtt",
                "--mqtt-url",
                mqtt_url,
                "--topic-root",
                root,
                "--connect",
                "shared",
            ],
        )
        assert result.exit_code == 0, result.output
        frames = [p for p in read_frame_file(out) if p.topic(root).endswith("/up")]
        sub.wait_for(len(frames))
        result = CliRunner().invoke(
            app,
            [
                "replay",
                str(out),
                "--mqtt-url",
                mqtt_url,
                "--topic-root",
                root,
                "--connect",
                "shared",
            ],
        )
        assert result.exit_code == 0, result.output
        sub.wait_for(2 * len(frames))
    assert sorted(p for _, p, _ in sub.messages) == sorted(2 * [f.payload for f in frames])


def test_same_bytes_across_processes(tmp_path: Path) -> None:
    """No set or dict order leaks into the output: other hash seeds, same file."""
    outputs = []
    for hash_seed in ("1", "2"):
        out = tmp_path / f"run{hash_seed}.frames"
        subprocess.run(
            [
                sys.executable,
                "-m",
                "simulators.cli",
                "simulate",
                "--bikes",
                "2",
                "--minutes",
                "10",
                "--seed",
                "9",
                "--faults",
                "typical",
                "--out",
                str(out),
                "--start",
                "2026-06-15T09:00+02:00",
            ],
            check=True,
            capture_output=True,
            env={**os.environ, "PYTHONHASHSEED": hash_seed},
            timeout=120,
        )
        outputs.append(out.read_bytes())
    assert outputs[0] == outputs[1]
    assert len(outputs[0]) > 1000


@pytest.mark.mqtt
def test_simulate_and_replay_as_given_kits_on_a_broker_with_accounts(
    tmp_path: Path, secured_broker: SecuredBroker
) -> None:
    """Kits made elsewhere (`kits add` prints their secrets) ride as the fleet, each logged
    in as itself; replay logs them in again from the same file."""
    root = secured_broker.layout.root
    kits = tmp_path / "kits.json"
    kits.write_text(
        json.dumps([{"kit_id": k, "key": s.hex()} for k, s in secured_broker.secrets.items()])
    )
    out = tmp_path / "run.frames"
    kits_url = f"mqtt://127.0.0.1:{secured_broker.kit_port}"
    ingest = Client(secured_broker.service_port, ingest_login())
    try:
        ingest.subscribe(f"{root}/kits/+/up")
        result = CliRunner().invoke(
            app,
            [
                "simulate",
                "--kits",
                str(kits),
                "--minutes",
                "5",
                "--out",
                str(out),
                "--mqtt",
                "--mqtt-url",
                kits_url,
                "--topic-root",
                root,
                "--no-register",
            ],
        )
        assert result.exit_code == 0, result.output
        frames = [p for p in read_frame_file(out) if p.topic(root).endswith("/up")]
        assert {p.kit_id for p in frames} == set(secured_broker.secrets)
        wait_for(lambda: len(ingest.messages) >= len(frames), what="the frames")
        result = CliRunner().invoke(
            app,
            ["replay", str(out), "--mqtt-url", kits_url, "--topic-root", root, "--kits", str(kits)],
        )
        assert result.exit_code == 0, result.output
        wait_for(lambda: len(ingest.messages) >= 2 * len(frames), what="the replayed frames")
    finally:
        ingest.close()
    assert sorted(p for _, p in ingest.messages) == sorted(2 * [f.payload for f in frames])

    result = CliRunner().invoke(app, ["replay", str(out), "--mqtt-url", kits_url])
    assert result.exit_code == 2
    assert "--kits" in result.output
    result = CliRunner().invoke(
        app, ["simulate", "--kits", str(kits), "--bikes", "5", "--out", str(tmp_path / "x.frames")]
    )
    assert result.exit_code == 2
    # The message sits in a box as wide as the terminal, wrapped after the kits file's path.
    said = " ".join(result.output.replace("│", " ").split())
    assert "one per bike" in said, result.output

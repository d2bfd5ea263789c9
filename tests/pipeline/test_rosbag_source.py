"""ROS bags (ROS 2 MCAP and SQLite, ROS 1), written here by the rosbags library's own writers
with the standard message types, read on one clock per episode."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from wallwm.cli.main import app
from wallwm.pipeline.ingest import IngestConfig, load_episode, run_ingest
from wallwm.pipeline.segmentation import SegmentConfig
from wallwm.pipeline.sources.base import EpisodeError
from wallwm.pipeline.sources.peek import peek_source
from wallwm.pipeline.sources.registry import detect_format, open_source
from wallwm.pipeline.tables import schemas
from wallwm.pipeline.tables.store import LanceStore
from wallwm.pipeline.video import read_frames

T0_NS = 1_700_000_000_000_000_000  # a wall-clock recorder's epoch times
SIZE = 16


def _frame(i: int) -> np.ndarray:
    img = np.zeros((SIZE, SIZE, 3), np.uint8)
    img[:, :, 0] = 10 * (i % 20)  # red carries the frame's index
    img[i % SIZE, :, 1] = 255
    return img


def _cmd(t_s: float) -> float:
    return round(0.1 * np.floor(t_s / 0.3), 6)  # a velocity command changing every 0.3 s


def write_bag(
    path: Path,
    kind: str = "mcap",
    *,
    seconds: float = 2.0,
    topics: tuple = (),
    every: int = 1,
    marks: tuple = (),
) -> Path:
    """A demonstration: a 10 Hz rgb8 camera and a 10 Hz PNG wrist camera, 100 Hz joint states
    (arm and gripper joints), 50 Hz twist commands (``every``: one in that many of them), a
    5 Hz gripper command, an instruction. ``topics`` leaves out the named roles. ``marks``:
    ``(seconds, value)`` messages: a bool on ``/recording`` (a std_msgs/Bool switch), None on
    ``/episode_reset`` (std_msgs/Empty), a text on ``/task_instruction``."""
    from rosbags.typesys import Stores, get_typestore

    ts = get_typestore(Stores.ROS1_NOETIC if kind == "ros1" else Stores.ROS2_HUMBLE)
    t = ts.types
    header = t["std_msgs/msg/Header"]
    stamp = t["builtin_interfaces/msg/Time"]
    vec = t["geometry_msgs/msg/Vector3"]
    if kind == "ros1":
        from rosbags.rosbag1 import Writer

        writer = Writer(path)
        serialize = ts.serialize_ros1
    else:
        from rosbags.rosbag2 import StoragePlugin, Writer

        plugin = StoragePlugin.MCAP if kind == "mcap" else StoragePlugin.SQLITE3
        writer = Writer(path, version=9, storage_plugin=plugin)
        serialize = ts.serialize_cdr
    path.parent.mkdir(parents=True, exist_ok=True)
    messages = []  # (time ns, topic, message)

    def head(t_ns: int) -> object:
        kw = {"seq": 0} if kind == "ros1" else {}
        return header(stamp=stamp(sec=t_ns // 10**9, nanosec=t_ns % 10**9), frame_id="", **kw)

    n_cam = int(seconds * 10)
    for i in range(n_cam):
        t_ns = T0_NS + i * 100_000_000
        if "camera" not in topics:
            img = _frame(i)
            msg = t["sensor_msgs/msg/Image"](
                header=head(t_ns), height=SIZE, width=SIZE, encoding="bgr8", is_bigendian=0,
                step=SIZE * 3, data=img[:, :, ::-1].reshape(-1).copy(),
            )  # fmt: skip
            messages.append((t_ns, "/camera/color/image_raw", msg))
            png = cv2.imencode(".png", cv2.cvtColor(img, cv2.COLOR_RGB2BGR))[1].reshape(-1)
            msg = t["sensor_msgs/msg/CompressedImage"](header=head(t_ns + 1000), format="png",
                                                        data=png)  # fmt: skip
            messages.append((t_ns + 1000, "/wrist/image/compressed", msg))
        depth = t["sensor_msgs/msg/Image"](
            header=head(t_ns), height=2, width=2, encoding="16UC1", is_bigendian=0, step=4,
            data=np.zeros(8, np.uint8),
        )  # fmt: skip
        messages.append((t_ns, "/camera/depth/image_raw", depth))
    for i in range(int(seconds * 100)):
        t_ns = T0_NS + 2_000_000 + i * 10_000_000
        msg = t["sensor_msgs/msg/JointState"](
            header=head(t_ns), name=["shoulder", "elbow", "gripper_finger"],
            position=np.array([i * 0.01, -i * 0.01, 0.04 if i < 100 else 0.0]),
            velocity=np.zeros(0), effort=np.zeros(0),
        )  # fmt: skip
        messages.append((t_ns, "/joint_states", msg))
    for i in range(int(seconds * 50)):
        t_ns = T0_NS + 1_000_000 + i * 20_000_000
        if "command" not in topics and i % every == 0:
            v = _cmd(i * 0.02)
            msg = t["geometry_msgs/msg/Twist"](linear=vec(x=v, y=0.0, z=-v),
                                               angular=vec(x=0.0, y=0.0, z=0.0))  # fmt: skip
            messages.append((t_ns, "/servo/cmd_vel", msg))
        if i % 10 == 0 and "gripper" not in topics:
            grip = t["std_msgs/msg/Float64"](data=1.0 if i < 50 else 0.0)
            # two nodes publish it (in a ROS 1 bag: two connections of one topic)
            messages.append((t_ns, "/gripper/command", grip, f"/teleop_{i // 10 % 2}"))
    messages.append((T0_NS, "/task_instruction", t["std_msgs/msg/String"](data="stack the cups")))
    for t_s, value in marks:
        t_ns = T0_NS + round(t_s * 1e9)
        if isinstance(value, bool):
            messages.append((t_ns, "/recording", t["std_msgs/msg/Bool"](data=value)))
        elif value is None:
            messages.append((t_ns, "/episode_reset", t["std_msgs/msg/Empty"]()))
        else:
            messages.append((t_ns, "/task_instruction", t["std_msgs/msg/String"](data=value)))
    with writer:
        conns = {}
        for t_ns, topic, msg, *node in sorted(messages, key=lambda m: m[0]):
            key = (topic, *node) if kind == "ros1" else (topic,)
            if key not in conns:
                kw = {"callerid": node[0]} if kind == "ros1" and node else {}
                conns[key] = writer.add_connection(topic, msg.__msgtype__, typestore=ts, **kw)
            writer.write(conns[key], t_ns, bytes(serialize(msg, msg.__msgtype__)))
    return path


@pytest.fixture(scope="module")
def bags(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("bags")
    write_bag(root / "mon" / "demo_0", "mcap")
    write_bag(root / "mon" / "demo_1", "sqlite3", seconds=1.5)
    write_bag(root / "tue" / "demo_2.bag", "ros1")
    return root


@pytest.fixture(scope="module")
def solo_mcap(bags, tmp_path_factory) -> Path:
    """A ROS 2 bag's MCAP file shared on its own (no metadata.yaml)."""
    import shutil

    (mcap,) = (bags / "mon" / "demo_0").glob("*.mcap")
    return Path(shutil.copy(mcap, tmp_path_factory.mktemp("solo") / "demo_3.mcap"))


@pytest.mark.parametrize("name", ["mon/demo_0", "mon/demo_1", "tue/demo_2.bag", "solo"])
def test_every_topic_is_read_on_the_first_cameras_clock(bags, solo_mcap, name):
    bag = solo_mcap if name == "solo" else bags / name
    assert detect_format(bag) == "rosbag"
    source = open_source(bag)
    (ref,) = source.list_episodes()[0]
    rec = load_episode(source, ref, frame_tolerance=0)
    # the clock: 10 Hz (the first camera's), from when every used topic has spoken
    assert rec.fps == pytest.approx(10.0)
    ticks_s = 0.002 + np.arange(len(rec.actions_TA)) * 0.1  # the joint states speak last
    # the command topics side by side, each holding its latest message
    assert rec.action_names == ["gripper.command", *[f"servo.cmd_vel.{k}" for k in
                                ("vx", "vy", "vz", "wx", "wy", "wz")]]  # fmt: skip
    held_cmd = [_cmd(np.floor((t - 0.001) / 0.02) * 0.02) for t in ticks_s]
    np.testing.assert_array_equal(rec.actions_TA[:, 0], np.where(ticks_s < 1.0, 1.0, 0.0))
    np.testing.assert_allclose(rec.actions_TA[:, 1], held_cmd, atol=1e-6)
    np.testing.assert_allclose(rec.actions_TA[:, 3], -np.asarray(held_cmd), atol=1e-6)
    # states: the joint positions by name; the gripper joint is the opening
    assert rec.state_names == ["shoulder", "elbow", "gripper_finger"]
    np.testing.assert_allclose(rec.states_TS[:, 0], np.round((ticks_s - 0.002) / 0.01) * 0.01,
                               atol=1e-5)  # fmt: skip
    np.testing.assert_array_equal(rec.gripper_TG[:, 0], rec.states_TS[:, 2])
    assert rec.instruction == "stack the cups"
    # cameras: colour and compressed, not depth; frames pixel for pixel, BGR turned RGB
    assert [c.name for c in rec.probed] == ["camera.color.image_raw", "wrist.image.compressed"]
    for cam in rec.probed:
        frames = np.stack(list(read_frames(cam)))
        assert len(frames) == len(rec.actions_TA)
        for k in (0, 5, len(frames) - 1):  # tick k holds the image of 0.1 k s (tick > image)
            np.testing.assert_array_equal(frames[k], _frame(k))


def test_a_folder_of_bags_runs_through_the_pipeline(bags, tmp_path):
    assert peek_source(str(bags)).hints == []  # no topic that looks like an episode marker
    ds = tmp_path / "ds"
    cfg = IngestConfig(source=str(bags), dataset=str(ds), executor="local")
    report = run_ingest(cfg.model_copy(update={"segment": SegmentConfig()}))
    assert (report.written, report.failed) == (3, 0) and report.events >= 3
    rows = LanceStore(str(ds)).read(schemas.EPISODES).to_pylist()
    assert sorted(r["episode_key"] for r in rows) == ["mon/demo_0", "mon/demo_1", "tue/demo_2.bag"]
    assert {c["codec"] for r in rows for c in r["cameras"]} == {"raw-rgb24", "png"}
    assert (run_ingest(cfg).written, run_ingest(cfg).unchanged) == (0, 3)


def test_the_action_topics_and_the_rate_can_be_stated(bags):
    bag = str(bags / "mon" / "demo_0")
    source = open_source(bag, fps=25, action_topics=("/servo/cmd_vel",))
    rec = source.read(source.list_episodes()[0][0])
    assert rec.fps == pytest.approx(25.0) and rec.actions_TA.shape[1] == 6
    with pytest.raises(EpisodeError, match=r"--action-topic /arm/cmd: no messages on it"):
        open_source(bag, action_topics=("/arm/cmd",)).read(source.list_episodes()[0][0])
    bad = open_source(bag, action_topics=("/camera/color/image_raw",))
    with pytest.raises(EpisodeError, match=r"sensor_msgs/msg/Image are not read as actions"):
        bad.read(source.list_episodes()[0][0])


def test_bag_problems_are_one_line(bags, tmp_path):
    quiet = write_bag(tmp_path / "no_twist", "mcap", topics=("command",))
    source = open_source(quiet)
    # the gripper command is still a command: only the twist is gone
    assert source.read(source.list_episodes()[0][0]).action_names == ["gripper.command"]
    quiet = write_bag(tmp_path / "no_commands", "mcap", topics=("command", "gripper"))
    source = open_source(quiet)
    with pytest.raises(EpisodeError, match=r"no command topic: pass --action-topic \(topics: "):
        source.read(source.list_episodes()[0][0])
    runner = CliRunner()
    broken = tmp_path / "broken"
    write_bag(broken, "mcap")
    (mcap,) = broken.glob("*.mcap")
    mcap.write_bytes(mcap.read_bytes()[:3000])
    result = runner.invoke(app, ["inspect", str(broken)])
    out = " ".join(result.output.split())
    assert result.exit_code == 0 and "Traceback" not in out
    assert f"would fail .: {broken}: unreadable bag:" in out
    result = runner.invoke(app, ["inspect", str(bags / "mon"), "--action-topic", "/nope"])
    assert "--action-topic /nope: no messages on it in this bag (topics: " in " ".join(
        result.output.split()
    )
    rlds = Path(__file__).resolve().parents[1] / "data" / "rlds" / "oxe_template"
    result = runner.invoke(app, ["inspect", str(rlds), "--action-topic", "/cmd"])
    assert result.exit_code == 1
    assert "--action-topic is for ROS bags; this source is rlds" in " ".join(result.output.split())


def test_a_session_bag_is_cut_into_the_episodes_its_switch_marks(tmp_path):
    """One bag, a whole session: a std_msgs/Bool recording switch marks three episodes (the
    last runs to the bag's end); what lies between a stop and the next start is in none. Each
    episode is read on its own clock, with its own frames and instruction."""
    marks = ((0.5, True), (2.0, False), (2.5, True), (2.6, "wipe the table"), (4.0, False),
             (4.5, True))  # fmt: skip
    bag = write_bag(tmp_path / "session", "mcap", seconds=6.0, marks=marks)
    assert len(open_source(bag).list_episodes()[0]) == 1  # without the option: one episode
    # ... and `wallwm inspect` points at the topic (its name and type say "marker")
    assert peek_source(str(bag)).hints == [
        "/recording (std_msgs/Bool, 5 messages) may mark episodes: --episode-topic /recording "
        "reads each bag as the episodes it marks"
    ]
    assert peek_source(str(bag), episode_topic="/recording").hints == []
    words = " ".join(CliRunner().invoke(app, ["inspect", str(bag)]).output.split())
    assert "hint /recording (std_msgs/Bool, 5 messages) may mark episodes" in words
    source = open_source(bag, episode_topic="/recording")
    refs, errors = source.list_episodes()
    assert errors == [] and [r.episode_key for r in refs] == [f"episode_000{k}" for k in range(3)]
    recs = [load_episode(source, ref, frame_tolerance=0) for ref in refs]
    # each episode read as its own bag would be: from when every topic has spoken inside it
    # (the 5 Hz gripper command, 0.101 s in) until the first falls silent (its last, 0.3 s
    # before the window ends), on the 10 Hz clock: 0.601-1.801 s, 2.601-3.801 s, 4.601-5.801 s
    assert [len(r.actions_TA) for r in recs] == [13, 13, 13]
    for rec, start_s in zip(recs, (0.6, 2.6, 4.6), strict=True):
        # the joint moves 0.01 a 0.01 s step: the tick holds its message of 0.592 s
        assert rec.states_TS[0, 0] == pytest.approx(start_s - 0.01, abs=1e-5)
        assert rec.timestamps_s[0] == 0.0
        frames = np.stack(list(read_frames(rec.probed[0])))
        assert len(frames) == len(rec.actions_TA)
        np.testing.assert_array_equal(frames[0], _frame(round(start_s * 10)))
        np.testing.assert_array_equal(frames[-1], _frame(round(start_s * 10) + 12))
    # the text published inside the episode, else the latest before it
    assert [r.instruction for r in recs] == ["stack the cups", "wipe the table", "wipe the table"]


def test_an_episode_topic_of_any_other_type_starts_one_at_each_message(tmp_path):
    bag = write_bag(tmp_path / "resets", "mcap", seconds=4.0, marks=((1.0, None), (3.0, None)))
    source = open_source(bag, episode_topic="/episode_reset")
    refs, _ = source.list_episodes()
    recs = [source.read(ref) for ref in refs]
    # before the first reset is no episode; the last one lasts to the bag's end
    assert [round(float(r.states_TS[0, 0]), 2) for r in recs] == [1.0, 3.0]
    assert [len(r.actions_TA) for r in recs] == [18, 8]  # 1.002-2.801 s, 3.002-3.801 s


def test_episode_topic_problems_are_one_line(bags, tmp_path):
    never = write_bag(tmp_path / "never", "mcap", marks=((0.5, False),))
    refs, errors = open_source(never, episode_topic="/recording").list_episodes()
    assert refs == [] and "--episode-topic /recording: no episode starts on it" in errors[0].problem
    # a folder of bags: the one without the topic is one line, the others list their episodes
    write_bag(tmp_path / "some" / "a", "mcap", marks=((0.5, True),))
    write_bag(tmp_path / "some" / "b", "mcap")
    refs, errors = open_source(tmp_path / "some", episode_topic="/recording").list_episodes()
    assert [r.episode_key for r in refs] == ["a/episode_0000"]
    assert [e.file for e in errors] == [str(tmp_path / "some" / "b")]
    assert "--episode-topic /recording: no messages on it in this bag (topics: " in (
        errors[0].problem
    )
    rlds = Path(__file__).resolve().parents[1] / "data" / "rlds" / "oxe_template"
    result = CliRunner().invoke(app, ["inspect", str(rlds), "--episode-topic", "/x"])
    assert result.exit_code == 1
    assert "--episode-topic is for ROS bags; this source is rlds" in " ".join(result.output.split())


@pytest.mark.usefixtures("ray_local")
def test_the_cli_passes_the_episode_topic_to_inspect_ingest_and_run(tmp_path):
    bag = write_bag(tmp_path / "session", "mcap", seconds=4.0,
                    marks=((0.5, True), (2.0, False), (2.5, True)))  # fmt: skip
    runner = CliRunner()
    peek = runner.invoke(app, ["inspect", str(bag), "--episode-topic", "/recording", "--json"])
    assert peek.exit_code == 0, peek.output
    import json

    assert json.loads(peek.output)["listed"] == 2
    for command in ("ingest", "run"):
        ds = tmp_path / command
        args = [command, str(bag), "-d", str(ds), "--episode-topic", "/recording"]
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
        assert "2 written" in " ".join(result.output.split())
        rows = LanceStore(str(ds)).read(schemas.EPISODES).to_pylist()
        assert sorted(r["episode_key"] for r in rows) == ["episode_0000", "episode_0001"]
        assert [r["num_frames"] for r in rows] == [13, 13]


@pytest.mark.usefixtures("ray_local")
def test_the_cli_passes_the_action_topic_to_ingest_and_run(bags, tmp_path):
    runner = CliRunner()
    bag = str(bags / "mon" / "demo_0")
    for command in ("ingest", "run"):
        args = [command, bag, "-d", str(tmp_path / command), "--action-topic", "/servo/cmd_vel"]
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
        assert "1 written" in " ".join(result.output.split())
        (row,) = LanceStore(str(tmp_path / command)).read(schemas.EPISODES).to_pylist()
        assert row["action_dim"] == 6  # the twist alone, not the gripper command beside it


def test_a_command_topic_slower_than_the_camera_is_read_at_its_own_rate(tmp_path):
    """Each tick holds every topic's latest message: a twist published at 3.3 Hz beside a
    10 Hz camera is a staircase on the camera's clock, which the cut reads at its own rate
    (what ``wallwm inspect`` says)."""
    bag = write_bag(tmp_path / "slow" / "demo_0", "mcap", seconds=9.0, every=15)
    (episode,) = peek_source(str(bag)).sampled
    assert "commands held 3 frames (3.33 Hz of 10): the models in time cut on their samples" in (
        episode.reading
    )
    words = " ".join(CliRunner().invoke(app, ["inspect", str(bag)]).output.split())
    assert f"read for the cut, {episode.key}: commands held 3 frames" in words
    # the gripper command, a topic of its own, switches between two twists: its event starts
    # at the switch (1.0 s), not at the next twist
    from wallwm.pipeline.segmentation import SegmentConfig, segment
    from wallwm.pipeline.segmentation.stage import record_signals

    source = open_source(bag)
    (ref,) = source.list_episodes()[0]
    signals = record_signals(load_episode(source, ref, frame_tolerance=0))
    cut = segment(signals, SegmentConfig())
    assert [b.frame for b in cut.boundaries if "gripper" in b.cues] == [10]


def test_inspect_names_the_columns_each_topic_gave(bags):
    """Which topics became which columns is what a user of a new robot checks first."""
    import json

    runner = CliRunner()
    words = " ".join(runner.invoke(app, ["inspect", str(bags / "mon")]).output.split())
    assert "actions: gripper.command, servo.cmd_vel.vx, servo.cmd_vel.vy" in words
    assert "states: shoulder, elbow, gripper_finger" in words
    found = json.loads(runner.invoke(app, ["inspect", str(bags / "mon"), "--json"]).output)
    assert found["sampled"][0]["state_names"] == ["shoulder", "elbow", "gripper_finger"]


def test_the_episode_plot_names_the_columns(bags, tmp_path, monkeypatch):
    """The plot's legend read ``state 0, state 1`` where the source names its joints."""
    from wallwm.pipeline import inspect

    ds = tmp_path / "ds"
    cfg = IngestConfig(source=str(bags / "mon" / "demo_0"), dataset=str(ds), executor="local")
    run_ingest(cfg.model_copy(update={"segment": SegmentConfig()}))
    figures = []
    monkeypatch.setattr(inspect, "save_figure", lambda fig, out, **kw: figures.append(fig))
    (row,) = LanceStore(str(ds)).read(schemas.EPISODES).to_pylist()
    inspect.plot_episode(LanceStore(str(ds)), row["episode_id"], tmp_path / "p.png")
    labels = [line.get_label() for ax in figures[0].axes for line in ax.get_lines()]
    assert "action servo.cmd_vel.vx" in labels
    assert "state elbow" in labels

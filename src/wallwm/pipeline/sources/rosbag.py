"""ROS bags: one recorded demonstration per bag, or many (via rosbags, pure Python: no ROS).

A SOURCE is a ROS 2 bag (a directory with ``metadata.yaml`` and its ``.mcap`` or ``.db3``
files), a ROS 2 ``.mcap`` file on its own, a ROS 1 ``.bag`` file, or a folder holding many bags
-- each bag one episode, or, with ``--episode-topic``, as many as that topic marks: a
``std_msgs/Bool`` topic starts an episode at each ``true`` and ends it at the next ``false`` (a
recorder's switch; what lies between a ``false`` and the next ``true`` is in no episode); on a
topic of any other type each message starts an episode that lasts until the next one or the
bag's end (a reset or "new episode" message). Topics play roles by their message type:

- **cameras**: every ``sensor_msgs/Image`` (rgb8, bgr8, rgba8, bgra8, mono8, mono16) and
  ``sensor_msgs/CompressedImage`` (JPEG/PNG) topic not named ``*depth*``;
- **state**: every ``sensor_msgs/JointState`` topic not named as a command, its ``position``;
- **actions**: the topics ``--action-topic`` names (repeatable, concatenated in that order); by
  default every command topic, by topic name: ``trajectory_msgs/JointTrajectory`` (its first point),
  ``geometry_msgs/Twist[Stamped]``, ``std_msgs/Float{32,64}MultiArray``, and any readable topic
  named ``*cmd*`` / ``*command*`` / ``*action*`` / ``*target*`` / ``*goal*`` (a ``JointState``
  or ``PoseStamped`` command, a ``Float64`` gripper command);
- **instruction**: the first ``std_msgs/String`` on a topic named ``*instruction*`` / ``*task*``
  / ``*language*`` / ``*prompt*`` within the episode (else the latest one before it), else
  ``--instruction``.

Topics arrive at their own rates; an episode is read on one clock: the recorder's (each
message's log time, which every topic shares -- header stamps may come from other clocks), at
``--fps`` or else the first camera's median rate, from the moment every used topic has spoken
until the first one falls silent -- within the episode's own messages, where a bag holds
several (as if each were a bag of its own: a slow topic's last message before the episode
holds nothing over into it). At each tick every signal and camera holds its latest message
(what a policy running at that rate saw).
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from wallwm.pipeline.image_frames import decode_image_bytes, rgb_frame
from wallwm.pipeline.sources.base import (
    BadSignalError,
    CameraSpec,
    CorruptVideoError,
    EpisodeError,
    EpisodeRecord,
    EpisodeRef,
    FloatArray,
    GripperOpen,
    MissingFieldError,
    OptionedSource,
    orient_gripper,
)

FORMAT = "rosbag"
IMAGE = "sensor_msgs/msg/Image"
COMPRESSED = "sensor_msgs/msg/CompressedImage"
JOINT_STATE = "sensor_msgs/msg/JointState"
STRING = "std_msgs/msg/String"
#: Message types that are commands wherever they are published.
COMMAND_TYPES = {
    "trajectory_msgs/msg/JointTrajectory",
    "geometry_msgs/msg/Twist",
    "geometry_msgs/msg/TwistStamped",
    "std_msgs/msg/Float64MultiArray",
    "std_msgs/msg/Float32MultiArray",
}
#: Topic names that say "command" (a JointState, pose or scalar published as a target).
_COMMAND_NAME = re.compile(r"cmd|command|action|target|goal", re.IGNORECASE)
_INSTRUCTION_NAME = re.compile(r"instruction|task|language|prompt", re.IGNORECASE)


def _is_ros2_bag(path: Path) -> bool:
    return path.is_dir() and (path / "metadata.yaml").is_file()


#: Bag files read without a ``metadata.yaml``: ROS 1 bags, and a ROS 2 bag's MCAP file shared
#: on its own (it carries its message definitions).
BAG_SUFFIXES = (".bag", ".mcap")


def _is_bag(path: Path) -> bool:
    return _is_ros2_bag(path) or (path.is_file() and path.suffix in BAG_SUFFIXES)


def bags_under(root: Path) -> list[Path]:
    """``root`` if it is a bag, else the bags below it (sorted; a bag is not looked into)."""
    if _is_bag(root):
        return [root]
    if not root.is_dir():
        return []
    found: list[Path] = []
    for path in sorted(root.rglob("*")):
        if any(parent in found for parent in path.parents):
            continue  # inside a ROS 2 bag already found
        if _is_bag(path):
            found.append(path)
    return found


def looks_like(root: Path) -> bool:
    """Whether ``root`` is a ROS bag or a folder of them."""
    if _is_bag(root):
        return True
    if not root.is_dir():
        return False
    return any(p.suffix in BAG_SUFFIXES or p.name == "metadata.yaml" for p in root.rglob("*"))


# --- messages as vectors -----------------------------------------------------------------


def _xyz(v: Any) -> list[float]:
    return [float(v.x), float(v.y), float(v.z)]


def message_vector(msg: Any, msgtype: str, topic: str) -> tuple[list[float], list[str]] | None:
    """One message's numbers and their names; None for a type that carries no vector."""
    leaf = topic.strip("/").replace("/", ".") or topic
    if msgtype in (JOINT_STATE,):
        names = [str(n) for n in msg.name] or [f"{leaf}_{i}" for i in range(len(msg.position))]
        return [float(x) for x in msg.position], names
    if msgtype == "trajectory_msgs/msg/JointTrajectory":
        if not len(msg.points):
            return None  # an empty trajectory commands nothing: the last command holds
        names = [str(n) for n in msg.joint_names]
        return [float(x) for x in msg.points[0].positions], names
    if msgtype in ("geometry_msgs/msg/Twist", "geometry_msgs/msg/TwistStamped"):
        twist = msg.twist if msgtype.endswith("Stamped") else msg
        names = [f"{leaf}.{k}" for k in ("vx", "vy", "vz", "wx", "wy", "wz")]
        return _xyz(twist.linear) + _xyz(twist.angular), names
    if msgtype in ("geometry_msgs/msg/Pose", "geometry_msgs/msg/PoseStamped"):
        pose = msg.pose if msgtype.endswith("Stamped") else msg
        q = pose.orientation
        names = [f"{leaf}.{k}" for k in ("x", "y", "z", "qx", "qy", "qz", "qw")]
        return [*_xyz(pose.position), float(q.x), float(q.y), float(q.z), float(q.w)], names
    if msgtype.startswith("std_msgs/msg/") and msgtype.endswith("MultiArray"):
        data = np.asarray(msg.data, dtype=np.float64).ravel()
        return data.tolist(), [f"{leaf}_{i}" for i in range(len(data))]
    if msgtype in {f"std_msgs/msg/{t}" for t in ("Float64", "Float32", "Int32", "Int64", "Bool")}:
        return [float(msg.data)], [leaf]
    return None


READABLE = {
    JOINT_STATE,
    "trajectory_msgs/msg/JointTrajectory",
    "geometry_msgs/msg/Twist",
    "geometry_msgs/msg/TwistStamped",
    "geometry_msgs/msg/Pose",
    "geometry_msgs/msg/PoseStamped",
    "std_msgs/msg/Float64MultiArray",
    "std_msgs/msg/Float32MultiArray",
    "std_msgs/msg/Int32MultiArray",
    "std_msgs/msg/Float64",
    "std_msgs/msg/Float32",
    "std_msgs/msg/Int32",
    "std_msgs/msg/Int64",
    "std_msgs/msg/Bool",
}


def image_frame(msg: Any, msgtype: str, where: str) -> npt.NDArray[np.uint8]:
    """A camera message as (H, W, 3) uint8 RGB."""
    if msgtype == COMPRESSED:
        return decode_image_bytes(np.frombuffer(bytes(msg.data), np.uint8), where)
    encoding = str(msg.encoding).lower()
    channels = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "mono8": 1, "8uc1": 1, "8uc3": 3,
                "mono16": 1, "16uc1": 1}.get(encoding)  # fmt: skip
    if channels is None:
        raise CorruptVideoError(where, f"image encoding {msg.encoding!r} is not read")
    wide = encoding in ("mono16", "16uc1")
    dtype = np.dtype(">u2" if msg.is_bigendian else "<u2") if wide else np.dtype(np.uint8)
    row = np.frombuffer(bytes(msg.data), dtype=np.uint8).reshape(int(msg.height), int(msg.step))
    width = int(msg.width) * channels * dtype.itemsize
    pixels = np.ascontiguousarray(row[:, :width]).view(dtype).reshape(
        int(msg.height), int(msg.width), channels
    )  # fmt: skip
    if wide:
        pixels = (pixels >> 8).astype(np.uint8)  # the top 8 bits, as for 16-bit HDF5 frames
    if encoding.startswith("bgr"):
        pixels = pixels[:, :, 2::-1]  # BGR(A) -> RGB
    # grey and alpha as every stored frame: (H, W, 1) repeated, (H, W, 4) cut to three
    return np.ascontiguousarray(rgb_frame(pixels, where))


# --- the clock ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Clock:
    """An episode's ticks: ``start_ns + k * step_ns`` for k < ``count``."""

    start_ns: int
    step_ns: int
    count: int
    #: Where the episode's messages begin (one of many in a bag): none before it is held.
    since_ns: int = 0

    @property
    def ticks_ns(self) -> npt.NDArray[np.int64]:
        """Every tick's time."""
        return self.start_ns + np.arange(self.count, dtype=np.int64) * self.step_ns

    def held(self, times_ns: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
        """Per tick, the index of the latest message at or before it (times sorted)."""
        return np.searchsorted(times_ns, self.ticks_ns, side="right") - 1


def rosbag_frames_uri(bag: str, topic: str, clock: Clock) -> str:
    """The URI of one camera's frames on an episode's clock."""
    since = f"~{clock.since_ns}" if clock.since_ns else ""
    return f"{bag}#{topic}@{clock.start_ns}+{clock.step_ns}x{clock.count}{since}"


_URI = re.compile(
    r"(?P<topic>/.*)@(?P<start>\d+)\+(?P<step>\d+)x(?P<count>\d+)(?:~(?P<since>\d+))?"
)


def split_rosbag_uri(uri: str) -> tuple[str, str, Clock] | None:
    """``(bag, topic, clock)`` for a ROS bag camera URI, else None."""
    path, sep, rest = uri.partition("#")
    match = _URI.fullmatch(rest) if sep else None
    if match is None or not (path.endswith(BAG_SUFFIXES) or Path(path, "metadata.yaml").is_file()):
        return None
    clock = Clock(int(match["start"]), int(match["step"]), int(match["count"]),
                  int(match["since"] or 0))  # fmt: skip
    return path, match["topic"], clock


def _reader(bag: str) -> Any:
    from rosbags.highlevel import AnyReader
    from rosbags.typesys import Stores, get_typestore

    # a bag that carries its message definitions uses them; the rest are ROS 2 Humble's
    return AnyReader([Path(bag)], default_typestore=get_typestore(Stores.ROS2_HUMBLE))


@contextlib.contextmanager
def _reading(bag: str) -> Iterator[Any]:
    """An open reader of ``bag``; what goes wrong reading it is one line naming the bag."""
    try:
        with _reader(bag) as reader:
            yield reader
    except EpisodeError:
        raise
    except Exception as exc:  # rosbags' reader errors share no base class
        raise CorruptVideoError(bag, f"unreadable bag: {type(exc).__name__}: {exc}") from exc


@dataclass(frozen=True)
class _Window:
    """Where one episode lies in its bag: ``[from_ns, to_ns)``, ``to_ns`` None for its end."""

    from_ns: int = 0
    to_ns: int | None = None

    @classmethod
    def of(cls, clock: Clock) -> _Window:
        """From where an episode's messages begin to its clock's end."""
        return cls(clock.since_ns, clock.start_ns + clock.count * clock.step_ns)

    def bounds(self) -> dict[str, int | None]:
        """``reader.messages``' ``start`` and ``stop``."""
        return {"start": self.from_ns or None, "stop": self.to_ns}


def iter_rosbag_frames(bag: str, topic: str, clock: Clock) -> Iterator[npt.NDArray[np.uint8]]:
    """Yield a camera's frames, one per tick: the latest image at or before it, decoded once."""
    where = f"{bag}#{topic}"
    ticks = clock.ticks_ns
    k = 0
    with _reading(bag) as reader:
        conns = [c for c in reader.connections if c.topic == topic]
        if not conns:
            raise MissingFieldError(bag, f"camera topic {topic} is missing", "MissingCamera")
        held: tuple[bytes, str] | None = None  # the latest message so far, undecoded
        for conn, t_ns, raw in reader.messages(connections=conns, start=clock.since_ns or None):
            if held is not None and k < clock.count and ticks[k] < t_ns:
                frame = image_frame(reader.deserialize(*held), held[1], where)
                while k < clock.count and ticks[k] < t_ns:  # ticks before this message
                    yield frame
                    k += 1
            if k >= clock.count:
                return
            held = (raw, conn.msgtype)
        if held is not None and k < clock.count:
            frame = image_frame(reader.deserialize(*held), held[1], where)
            for _ in range(k, clock.count):
                yield frame


def rosbag_layout(bag: str, topic: str, clock: Clock | None = None) -> tuple[int, str]:
    """(bytes of the camera's messages, codec) for its ``CameraInfo``.

    The episode's own messages, where ``clock`` says where it lies in the bag.
    """
    window = _Window() if clock is None else _Window.of(clock)
    with _reading(bag) as reader:
        conns = [c for c in reader.connections if c.topic == topic]
        size, codec = 0, "raw-rgb24"
        for conn, _, raw in reader.messages(connections=conns, **window.bounds()):
            size += len(raw)
            if conn.msgtype == COMPRESSED and codec == "raw-rgb24":
                codec = str(reader.deserialize(raw, conn.msgtype).format).split(";")[0] or "jpeg"
        return size, codec


# --- the source ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Topic:
    """One topic of a bag: every connection publishing on it (a ROS 1 bag has one per node)."""

    topic: str
    msgtype: str
    conns: tuple[Any, ...]


def _topics(reader: Any, bag: str) -> list[_Topic]:
    """The bag's topics that carry messages, by name."""
    by_name: dict[str, list[Any]] = {}
    for conn in reader.connections:
        if conn.msgcount > 0:
            by_name.setdefault(conn.topic, []).append(conn)
    topics = []
    for name in sorted(by_name):  # every bag of a dataset lists its columns in one order
        types = sorted({c.msgtype for c in by_name[name]})
        if len(types) > 1:
            raise BadSignalError(bag, f"{name}: published with two types ({', '.join(types)})",
                                 "BadType")  # fmt: skip
        topics.append(_Topic(name, types[0], tuple(by_name[name])))
    return topics


@dataclass
class _Series:
    """One topic's messages as vectors on the recorder's clock."""

    topic: str
    times_ns: npt.NDArray[np.int64]
    values: FloatArray
    names: list[str]


BOOL = "std_msgs/msg/Bool"


def episode_windows(markers: list[tuple[int, Any]], msgtype: str) -> list[_Window]:
    """The episodes an ``--episode-topic``'s messages mark, from ``(log time, message)`` pairs.

    A ``std_msgs/Bool`` topic is a switch: ``true`` starts an episode (a second ``true`` while
    one is running starts the next), ``false`` ends it. Any other message starts an episode
    that the next one ends (the last lasts to the bag's end).
    """
    windows: list[_Window] = []
    start: int | None = None
    for t_ns, msg in markers:
        on = bool(msg.data) if msgtype == BOOL else True
        if start is not None and (on or msgtype == BOOL):
            windows.append(_Window(start, t_ns))
            start = None
        if on:
            start = t_ns
    if start is not None:
        windows.append(_Window(start, None))
    return windows


#: Topic names that say "episode marker": a recorder's switch, a reset, a trial counter.
_MARKER_NAME = re.compile(r"episode|record|reset|demo|trial", re.IGNORECASE)
#: Message types an episode marker is published as.
MARKER_TYPES = {BOOL, "std_msgs/msg/Empty", "std_msgs/msg/Header", "std_msgs/msg/Int32",
                "std_msgs/msg/UInt32", "std_msgs/msg/String"}  # fmt: skip


class RosbagSource(OptionedSource):
    """Reader of ROS 1 / ROS 2 bags: one episode per bag, or those an episode topic marks."""

    format = FORMAT

    def __init__(
        self,
        root: str | Path,
        instruction: str | None = None,
        fps: float | None = None,
        gripper_open: GripperOpen = "auto",
        action_topics: tuple[str, ...] = (),
        episode_topic: str | None = None,
    ) -> None:
        """Open the bag, or the folder of bags, at ``root``.

        Args:
            root: A ROS 2 bag directory or ``.mcap`` file, a ROS 1 ``.bag`` file, or a folder
                of them.
            instruction: Instruction of episodes whose bag publishes none.
            fps: The episode clock's rate (default: the first camera's median rate).
            gripper_open: ``low``: joint positions named ``*grip*`` shrink as it opens.
            action_topics: The topics whose messages are the actions (default: every
                command topic, see the module docstring).
            episode_topic: The topic whose messages mark where episodes begin (and, a
                ``std_msgs/Bool``, end) within each bag (default: a bag is one episode).
        """
        super().__init__(root, instruction, fps, gripper_open)
        self.action_topics = tuple(action_topics)
        self.episode_topic = episode_topic

    def list_episodes(self) -> tuple[list[EpisodeRef], list[EpisodeError]]:
        """One ref per bag, or per episode its episode topic marks (reading that topic only)."""
        refs: list[EpisodeRef] = []
        errors: list[EpisodeError] = []
        for bag in bags_under(self.root):
            files = [bag] if bag.is_file() else sorted(p for p in bag.iterdir() if p.is_file())
            key = "." if bag == self.root else str(bag.relative_to(self.root))
            paths = tuple(str(f) for f in files)
            if self.episode_topic is None:
                refs.append(EpisodeRef(self.uri, FORMAT, key, paths, {"bag": str(bag)}))
                continue
            try:
                windows = self._windows(str(bag))
            except EpisodeError as exc:
                errors.append(exc)
                continue
            prefix = "" if key == "." else f"{key}/"
            for k, w in enumerate(windows):
                where = {"bag": str(bag), "from_ns": w.from_ns, "to_ns": w.to_ns}
                refs.append(EpisodeRef(self.uri, FORMAT, f"{prefix}episode_{k:04d}", paths, where))
        return refs, errors

    def hints(self) -> list[str]:
        """What ``wallwm inspect`` suggests: the first bag's topics that may mark episodes.

        Only where no ``--episode-topic`` is given; reads the bag's index, no message.
        """
        bags = bags_under(self.root)
        if self.episode_topic is not None or not bags:
            return []
        with _reading(str(bags[0])) as reader:
            topics = _topics(reader, str(bags[0]))
        return [
            f"{t.topic} ({t.msgtype.replace('/msg/', '/')}, {sum(c.msgcount for c in t.conns)} "
            f"messages) may mark episodes: --episode-topic {t.topic} reads each bag as the "
            "episodes it marks"
            for t in topics
            if t.msgtype in MARKER_TYPES and _MARKER_NAME.search(t.topic)
        ]

    def _windows(self, bag: str) -> list[_Window]:
        """The episodes the episode topic marks in ``bag``."""
        topic = str(self.episode_topic)
        with _reading(bag) as reader:
            topics = _topics(reader, bag)
            marker = next((t for t in topics if t.topic == topic), None)
            if marker is None:
                raise MissingFieldError(
                    bag, f"--episode-topic {topic}: no messages on it in this bag (topics: "
                    f"{_listing(topics)})", "MissingEpisodes",
                )  # fmt: skip
            switch = marker.msgtype == BOOL  # only a switch's messages are read
            markers = [
                (t_ns, reader.deserialize(raw, marker.msgtype) if switch else None)
                for _, t_ns, raw in reader.messages(connections=marker.conns)
            ]
        windows = episode_windows(markers, marker.msgtype)
        if not windows:
            raise MissingFieldError(
                bag, f"--episode-topic {topic}: no episode starts on it (no message true)",
                "MissingEpisodes",
            )  # fmt: skip
        return windows

    def read(self, ref: EpisodeRef) -> EpisodeRecord:
        """Read one episode's signals on its clock (frames lazily by camera URI)."""
        bag = str(ref.locator["bag"])
        from_ns, to_ns = ref.locator.get("from_ns"), ref.locator.get("to_ns")
        window = _Window(
            from_ns if isinstance(from_ns, int) else 0, to_ns if isinstance(to_ns, int) else None
        )
        with _reading(bag) as reader:
            return self._read(reader, bag, ref, window)

    def _roles(
        self, reader: Any, bag: str
    ) -> tuple[list[_Topic], list[_Topic], list[_Topic], list[_Topic]]:
        """(action, state, camera, instruction) topics of one bag."""
        topics = _topics(reader, bag)
        cameras = [t for t in topics if t.msgtype in (IMAGE, COMPRESSED)
                   and "depth" not in t.topic.lower()]  # fmt: skip
        texts = [t for t in topics if t.msgtype == STRING and _INSTRUCTION_NAME.search(t.topic)]
        if self.action_topics:
            by_name = {t.topic: t for t in topics}
            missing = [name for name in self.action_topics if name not in by_name]
            if missing:
                raise MissingFieldError(
                    bag, f"--action-topic {missing[0]}: no messages on it in this bag (topics: "
                    f"{_listing(topics)})", "MissingActions",
                )  # fmt: skip
            actions = [by_name[name] for name in self.action_topics]
        else:
            actions = [
                t for t in topics
                if t.msgtype in COMMAND_TYPES
                or (t.msgtype in READABLE and _COMMAND_NAME.search(t.topic))
            ]  # fmt: skip
        if not actions:
            raise MissingFieldError(
                bag, f"no command topic: pass --action-topic (topics: {_listing(topics)})",
                "MissingActions",
            )  # fmt: skip
        unreadable = [t for t in actions if t.msgtype not in READABLE]
        if unreadable:
            t = unreadable[0]
            raise BadSignalError(
                bag, f"{t.topic}: messages of type {t.msgtype} are not read as actions",
                "BadType",
            )  # fmt: skip
        used = {t.topic for t in actions}
        states = [t for t in topics if t.msgtype == JOINT_STATE and t.topic not in used
                  and not _COMMAND_NAME.search(t.topic)]  # fmt: skip
        return actions, states, cameras, texts

    def _read(self, reader: Any, bag: str, ref: EpisodeRef, window: _Window) -> EpisodeRecord:
        actions, states, cameras, texts = self._roles(reader, bag)
        series, camera_times = _scan(reader, [*actions, *states], cameras, bag, window)
        clock = dataclasses.replace(self._clock(bag, series, camera_times), since_ns=window.from_ns)
        if clock.count < 2:
            within = "" if ref.locator.get("from_ns") is None else " in this episode"
            raise BadSignalError(
                bag, f"its topics overlap for less than two ticks of the clock{within}",
                "EmptyEpisode",
            )  # fmt: skip
        actions_TA, action_names = _held(series[: len(actions)], clock)
        states_TS, state_names = (
            _held(series[len(actions) :], clock) if states else (None, [])
        )  # fmt: skip
        grips = [i for i, n in enumerate(state_names) if "grip" in n.lower()]
        return EpisodeRecord(
            ref=ref,
            fps=1e9 / clock.step_ns,
            instruction=_first_text(reader, texts, window) or self.instruction,
            robot=None,
            actions_TA=actions_TA,
            cameras=[
                CameraSpec(_camera_name(c.topic), rosbag_frames_uri(bag, c.topic, clock))
                for c in cameras
            ],
            states_TS=states_TS,
            gripper_TG=orient_gripper(
                states_TS[:, grips] if states_TS is not None and grips else None,
                self.gripper_open,
            ),
            timestamps_s=(clock.ticks_ns - clock.start_ns) / 1e9,
            action_names=action_names,
            state_names=state_names or None,
        )

    def _clock(
        self, bag: str, series: list[_Series], camera_times: dict[str, npt.NDArray[np.int64]]
    ) -> Clock:
        """Ticks at ``--fps`` (else the first camera's median rate) while every topic speaks."""
        spans = [s.times_ns for s in series] + [t for t in camera_times.values() if len(t)]
        start = max(int(t[0]) for t in spans)
        end = min(int(t[-1]) for t in spans)
        if self.fps is not None:
            step = round(1e9 / self.fps)
        else:
            ref = next((camera_times[t] for t in sorted(camera_times) if len(camera_times[t]) > 1),
                       series[0].times_ns)  # fmt: skip
            gaps = np.diff(ref)
            gaps = gaps[gaps > 0]
            if not len(gaps):
                raise MissingFieldError(
                    bag, "no rate to read the bag at (one message per topic): pass --fps",
                    "MissingFps",
                )  # fmt: skip
            step = int(np.median(gaps))
        return Clock(start, max(step, 1), max((end - start) // max(step, 1) + 1, 0))


def _listing(topics: list[_Topic]) -> str:
    shown = ", ".join(f"{t.topic} ({t.msgtype.replace('/msg/', '/')})" for t in topics[:8])
    return shown + (f" and {len(topics) - 8} more" if len(topics) > 8 else "") or "none"


def _camera_name(topic: str) -> str:
    """A camera's name from its topic: ``/cam/wrist/image_raw`` -> ``cam.wrist.image_raw``."""
    return topic.strip("/").replace("/", ".") or "camera"


def _scan(
    reader: Any, signals: list[_Topic], cameras: list[_Topic], bag: str, window: _Window
) -> tuple[list[_Series], dict[str, npt.NDArray[np.int64]]]:
    """Every signal topic's vectors and every camera's message times, in one pass.

    Over the episode's ``window`` of the bag. Camera images are not decoded here. A topic
    whose width changes is one line naming it.
    """
    times: dict[str, list[int]] = {t.topic: [] for t in (*signals, *cameras)}
    rows: dict[str, list[list[float]]] = {t.topic: [] for t in signals}
    names: dict[str, list[str]] = {}
    conns = [c for t in (*signals, *cameras) for c in t.conns]
    for conn, t_ns, raw in reader.messages(connections=conns, **window.bounds()):
        topic = conn.topic
        if topic not in rows:  # a camera: its times only
            times[topic].append(t_ns)
            continue
        vec = message_vector(reader.deserialize(raw, conn.msgtype), conn.msgtype, topic)
        if vec is None:
            continue
        if rows[topic] and len(vec[0]) != len(rows[topic][0]):
            raise BadSignalError(
                bag, f"{topic}: a message of {len(vec[0])} values after ones of "
                f"{len(rows[topic][0])}", "BadShape",
            )  # fmt: skip
        times[topic].append(t_ns)
        rows[topic].append(vec[0])
        names[topic] = vec[1]
    series = []
    for t in signals:
        if not rows[t.topic]:
            within = " in this episode" if window != _Window() else ""
            raise BadSignalError(
                bag, f"{t.topic}: no message carries values{within}", "EmptyEpisode"
            )
        series.append(_Series(t.topic, np.asarray(times[t.topic], np.int64),
                              np.asarray(rows[t.topic], np.float32), names[t.topic]))  # fmt: skip
    return series, {t.topic: np.asarray(times[t.topic], np.int64) for t in cameras}


def _held(series: list[_Series], clock: Clock) -> tuple[FloatArray, list[str]]:
    """The series side by side on the clock, each holding its latest value."""
    columns = [s.values[clock.held(s.times_ns)] for s in series]
    names = [n for s in series for n in s.names]
    return np.concatenate(columns, axis=1).astype(np.float32), names


def _first_text(reader: Any, topics: list[_Topic], window: _Window) -> str | None:
    """The episode's instruction: the first text within ``window``, else the latest before."""
    for topic in topics:
        before = None
        for _, t_ns, raw in reader.messages(connections=topic.conns, stop=window.to_ns):
            text = str(reader.deserialize(raw, topic.msgtype).data).strip()
            if text and t_ns >= window.from_ns:
                return text
            before = text or before
        if before:
            return before
    return None


__all__ = [
    "FORMAT",
    "Clock",
    "RosbagSource",
    "bags_under",
    "episode_windows",
    "image_frame",
    "iter_rosbag_frames",
    "looks_like",
    "message_vector",
    "rosbag_frames_uri",
    "rosbag_layout",
    "split_rosbag_uri",
]
